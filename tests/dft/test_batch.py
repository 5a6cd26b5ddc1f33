"""Chunked batch relaxation: parts written as chunks finish, failures recorded, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from dft.batch import finished_ids, read_relaxed, relax_table
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from unimat_core.structure_table import records_to_frame, structure_from_json, write_structures

REPO = Path(__file__).resolve().parents[2]


def cu_cells(n: int, seed: int = 0) -> list[Structure]:
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        s = Structure(Lattice.cubic(rng.uniform(3.5, 3.8)), ["Cu"] * 4,
                      [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
        s.perturb(0.05)
        cells.append(s)
    return cells


def test_batch_records_crash_and_nonconvergence_and_completes(tmp_path):
    good = cu_cells(3)
    crash = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # EMT has no Na/Cl
    stubborn = cu_cells(1, seed=7)[0]
    frame = records_to_frame([good[0], crash, good[1], stubborn, good[2]], ["g0", "crash", "g1", "slow", "g2"],
                             source="test", properties={"heat_ref": [1.0, 2.0, 3.0, 4.0, 5.0]})
    summary = relax_table(frame, tmp_path / "relaxed", calculator=CalculatorConfig("emt"),
                          config=RelaxConfig(fmax=0.01, max_steps=200), chunk_size=2)
    assert len(summary.parts_written) == 3
    assert sorted(p.name for p in (tmp_path / "relaxed").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    out = read_relaxed(tmp_path / "relaxed").set_index("id")
    assert out.loc[["g0", "g1", "g2", "slow"], "converged"].all()
    assert not out.loc["crash", "converged"]
    assert "NotImplementedError" in out.loc["crash", "error"]
    assert out.loc["crash", "formula"] == "Na1 Cl1"  # input structure kept on failure
    assert out.loc["g0", "input_heat_ref"] == 1.0 and out.loc["g0", "input_source"] == "test"
    assert (summary.n_relaxed, summary.n_converged, summary.n_failed) == (5, 4, 1)
    relaxed = structure_from_json(out.loc["g1", "structure"])
    assert relaxed.lattice.a == pytest.approx(3.590, abs=0.02)

    # a step limit too small to converge: recorded, batch still complete
    summary = relax_table(frame, tmp_path / "short", calculator=CalculatorConfig("emt"),
                          config=RelaxConfig(fmax=0.001, max_steps=1), chunk_size=5)
    short = read_relaxed(tmp_path / "short").set_index("id")
    assert len(short) == 5 and not short["converged"].any()
    assert short.loc["g0", "error"].startswith("not converged")
    assert short.loc["g0", "steps"] == 1


def test_rerun_skips_finished_ids(tmp_path):
    cells = cu_cells(4)
    frame = records_to_frame(cells, [f"c{i}" for i in range(4)], source="test")
    first = relax_table(frame.iloc[:2], tmp_path, calculator=CalculatorConfig("emt"), chunk_size=1)
    assert first.n_relaxed == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("part-*.parquet")}
    second = relax_table(frame, tmp_path, calculator=CalculatorConfig("emt"), chunk_size=10)
    assert (second.n_done_before, second.n_relaxed) == (2, 2)
    assert [Path(p).name for p in second.parts_written] == ["part-00002.parquet"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("part-0000[01].parquet")} == mtimes
    assert relax_table(frame, tmp_path, calculator=CalculatorConfig("emt")).n_relaxed == 0
    assert finished_ids(tmp_path) == {f"c{i}" for i in range(4)}


def test_batched_chunks_resume_after_a_lost_chunk(tmp_path):
    """CHGNet through the batched engine, one part per chunk: a chunk lost to a kill is all that is redone."""
    pytest.importorskip("chgnet", reason="needs the `mlip` extra")
    from tests.dft.conftest import perturbed_test_crystals

    frame = records_to_frame(perturbed_test_crystals("perov_5", 4, seed=3), ["a", "b", "c", "d"], source="test")
    config = RelaxConfig(fmax=0.05, max_steps=30)
    first = relax_table(frame, tmp_path, calculator=chgnet_config(), config=config, chunk_size=2)
    assert first.n_relaxed == 4 and len(first.parts_written) == 2
    before = read_relaxed(tmp_path).set_index("id")
    assert (before["calculator"] == "chgnet").all() and (before["steps"] > 0).all()
    lost = set(pd.read_parquet(tmp_path / "part-00001.parquet")["id"])
    (tmp_path / "part-00001.parquet").unlink()  # what a kill during the second chunk leaves

    again = relax_table(frame, tmp_path, calculator=chgnet_config(), config=config, chunk_size=2)
    assert (again.n_done_before, again.n_relaxed) == (2, 2)
    assert len(again.parts_written) == 1 and set(pd.read_parquet(again.parts_written[0])["id"]) == lost
    after = read_relaxed(tmp_path).set_index("id").loc[before.index]
    assert after["energy"].tolist() == pytest.approx(before["energy"].tolist(), abs=1e-9)  # same chunk, same path


def chgnet_config() -> CalculatorConfig:
    return CalculatorConfig("chgnet", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ase", "batched"])
def test_killed_batch_resumes_without_redoing_finished(tmp_path, engine):
    """SIGKILL a real batch process after its first parts land; the rerun relaxes only the rest."""
    cells = []
    for i, s in enumerate(cu_cells(60, seed=3)):
        s.make_supercell([2, 2, 2])  # 32 atoms: slow enough to kill mid-batch
        cells.append(s)
    frame = records_to_frame(cells, [f"s{i:03d}" for i in range(len(cells))], source="test")
    write_structures(frame, tmp_path / "in.parquet")
    script = textwrap.dedent(f"""
        from dft.batch import relax_table
        from dft.calculators import CalculatorConfig
        from dft.relax import RelaxConfig
        from unimat_core.structure_table import read_structures
        relax_table(read_structures({str(tmp_path / 'in.parquet')!r}), {str(tmp_path / 'out')!r},
                    calculator=CalculatorConfig("emt"), config=RelaxConfig(fmax=1e-4, max_steps=300, engine={engine!r}),
                    chunk_size=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "out").glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished_ids(tmp_path / "out")
    assert 2 <= len(done) < len(frame), "the batch was not killed mid-way"
    parts_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet")}

    rest = frame[~frame["id"].isin(done)].iloc[:4]  # resume a few: enough to prove the skip
    resumed = relax_table(frame[frame["id"].isin(done) | frame["id"].isin(rest["id"])], tmp_path / "out",
                          calculator=CalculatorConfig("emt"), config=RelaxConfig(fmax=1e-4, max_steps=300),
                          chunk_size=10)
    assert resumed.n_done_before == len(done)
    assert resumed.n_relaxed == 4
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet")
            if p.name in parts_before} == parts_before
    out = read_relaxed(tmp_path / "out")
    assert not out["id"].duplicated().any()
    assert set(out["id"]) == done | set(rest["id"])


@pytest.mark.slow
def test_parallel_workers_match_serial(tmp_path):
    cells = cu_cells(4)
    frame = records_to_frame(cells, [f"c{i}" for i in range(4)], source="test")
    config = RelaxConfig(fmax=0.01)
    relax_table(frame, tmp_path / "serial", calculator=CalculatorConfig("emt"), config=config, chunk_size=2)
    summary = relax_table(frame, tmp_path / "parallel", calculator=CalculatorConfig("emt"), config=config,
                          chunk_size=2, n_workers=2)
    assert summary.n_relaxed == 4 and len(summary.parts_written) == 2
    serial = read_relaxed(tmp_path / "serial").set_index("id").sort_index()
    parallel = read_relaxed(tmp_path / "parallel").set_index("id").sort_index()
    np.testing.assert_allclose(serial["energy"], parallel["energy"], atol=1e-10)
