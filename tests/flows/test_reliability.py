"""Reliability of the stage flows: a killed relax resumes without redoing work; campaigns run side by side."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dft.batch import finished_ids
from flows.params import RelaxParams, RunParams, ScoreParams
from flows.stages import relax_flow, score_flow
from tests.flows.helpers import make_run

REPO = Path(__file__).resolve().parents[2]
EMT = RelaxParams(calculator="emt", chunk_size=2, max_steps=200, time_limit_s=30)

KILLABLE = textwrap.dedent("""
    import sys
    from flows.params import RelaxParams, RunParams
    from flows.stages import relax_flow
    relax_flow(RunParams(campaign="k", results_root=sys.argv[1]),
               RelaxParams(calculator="emt", chunk_size=1, max_steps=300, fmax=0.01, time_limit_s=60))
""")


@pytest.mark.slow
def test_relax_killed_mid_stage_leaves_a_consistent_folder_and_resumes(tmp_path):
    layout = make_run(tmp_path, "k", n_candidates=8, supercell=2)  # 32-atom cells: about a second each with EMT
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path)], cwd=REPO, env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any(layout.relaxed.glob("part-*.parquet")):
            assert proc.poll() is None, "the relax flow ended before writing a part"
            assert time.monotonic() < deadline, "no part file within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow process and the temporary Prefect server it started
        proc.wait(timeout=30)

    parts = sorted(layout.relaxed.glob("part-*.parquet"))
    assert 1 <= len(parts) < 8, "killed mid-stage: some chunks must be missing"
    done = []
    for part in parts:  # every part is complete and readable; a half-written chunk is only a hidden temp file
        done += pq.read_table(part, columns=["id"]).column("id").to_pylist()
    assert len(done) == len(set(done)) == len(parts)
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}

    result = relax_flow(RunParams(campaign="k", results_root=str(tmp_path)),
                        RelaxParams(calculator="emt", chunk_size=1, max_steps=300, fmax=0.01, time_limit_s=60))
    assert result["n_done_before"] >= len(done) and result["n_relaxed"] == 8
    assert result["n_relaxed_now"] == 8 - result["n_done_before"]
    for name, stamp in stamps.items():  # finished chunks were not redone
        assert (layout.relaxed / name).stat().st_mtime_ns == stamp
    ids = [i for p in sorted(layout.relaxed.glob("part-*.parquet"))
           for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert sorted(ids) == [f"k-gen-{i:05d}" for i in range(8)]  # each id exactly once


@pytest.mark.slow
def test_two_campaigns_run_concurrently_without_touching_each_other(tmp_path):
    layouts = {name: make_run(tmp_path, name, n_candidates=4, seed=seed) for name, seed in (("alpha", 0), ("beta", 7))}
    before = {name: {p: p.stat().st_mtime_ns for p in (tmp_path / name).rglob("*") if p.is_file()} for name in layouts}
    results, errors = {}, []

    def campaign(name: str) -> None:
        try:
            run = RunParams(campaign=name, results_root=str(tmp_path))
            results[name] = (relax_flow(run, EMT), score_flow(run, EMT, ScoreParams(reference_size=2)))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append((name, exc))

    threads = [threading.Thread(target=campaign, args=(name,)) for name in layouts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha", "beta"]
    for name, layout in layouts.items():
        relaxed, scores = results[name]
        assert relaxed["n_relaxed"] == 4 and relaxed["out_dir"] == str(layout.relaxed)
        assert all(i.startswith(f"{name}-gen-") for i in finished_ids(layout.relaxed))
        assert set(pd.read_parquet(layout.scores)["id"]) == {f"{name}-gen-{i:05d}" for i in range(4)}
        assert scores["scores"]["path"] == str(layout.scores)
        for path, stamp in before[name].items():  # inputs of each campaign untouched
            assert path.stat().st_mtime_ns == stamp
