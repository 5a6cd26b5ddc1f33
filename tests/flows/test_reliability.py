"""Reliability of the pipeline, one test per case of issue #20 (and the crash cases before it).

Each test checks the exit code or outcome, the message the user gets, and that no finished result is lost.
Everything is real: Prefect flows, pymatgen, EMT, the tiny UniMat model. The only stand-in is the absent
Materials Project service, which no test calls (its key is checked before any request).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Lattice, Structure

from dft.batch import finished_ids, read_relaxed
from flows.cli import main
from flows.params import GenerateParams, RelaxParams, RunParams, ScoreParams, TensorizeParams, TrainParams
from flows.stages import fetch_flow, generate_flow, relax_flow, score_flow, tensorize_flow, train_flow
from dft.batch import relax_ids
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from tests.conftest import REPO, TEST_PREFECT_HOME, perov5_test_csv
from tests.flows.helpers import make_run, write_generated
from unimat_core.datasets import read_cdvae_csv
from unimat_core.datasets.source import DatasetSource
from unimat_core.errors import UserInputError
from unimat_core.provenance import SUPERSEDED, read_record
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import records_to_frame, structure_from_json
from unimat_core.tensor_store import REJECTED, TensorDataset, tensorize_frame

EMT = RelaxParams(calculator="emt", chunk_size=2, max_steps=200, time_limit_s=30)
GENERATE = GenerateParams(num_samples=4, batch_size=2, steps=2, device="cpu")  # two parts of two samples


def snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder` with its bytes: what "no finished result lost or changed" compares."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(capsys, *args: str) -> tuple[int, str]:
    """`unimat ARGS` in this process: (exit code, stderr)."""
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if the command gets as far as starting a Prefect server."""
    def forbidden(*_args, **_kwargs):
        raise AssertionError("a Prefect server was started for a command that should have stopped before")
    monkeypatch.setattr("flows.server.command_server", forbidden)


def user_mistake(code: int, err: str, *expected: str) -> None:
    """Exit code 2 and at most two lines naming what to fix, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    for text in expected:
        assert text in err, (text, err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunLayout:
    """A campaign run by the real stage flows up to generate: 12 perov_5 crystals, the tiny model trained
    1 step, 4 unconditional samples in two parts (a minute or more on a busy 2-core machine)."""
    root = tmp_path_factory.mktemp("trained")
    run = RunParams(campaign="m", results_root=str(root / "runs"))
    fetch_flow(run, DatasetSource.parse(str(perov5_test_csv(root / "test.csv", 12))))
    tensorize_flow(run, TensorizeParams())
    train_flow(run, TrainParams(max_steps=1, batch_size=4, device="cpu"))
    generate_flow(run, GENERATE)
    return run.layout()


@pytest.fixture
def campaign(trained, tmp_path) -> tuple[RunParams, RunLayout]:
    """A private copy of the trained campaign (tests change it)."""
    shutil.copytree(trained.campaign_dir, tmp_path / "runs" / "m")
    run = RunParams(campaign="m", results_root=str(tmp_path / "runs"))
    return run, run.layout()


# ---- changed options never return old results -------------------------------------------------------------

@pytest.mark.slow
def test_generate_with_other_compositions_stops_and_keeps_the_samples(campaign, capsys, no_server):
    run, layout = campaign
    before = snapshot(layout.campaign_dir)
    code, err = cli(capsys, "generate", "--campaign", "m", "--results-root", run.results_root,
                    "--compositions", "SrTiO3")
    user_mistake(code, err, "generate of campaign 'm'", "compositions [] -> [\"SrTiO3\"]", "--overwrite generate",
                 "--campaign")
    assert snapshot(layout.campaign_dir) == before  # the old samples are untouched, nothing was added

    code, err = cli(capsys, "generate", "--campaign", "m", "--results-root", run.results_root,
                    "--compositions", "Fe30O40")  # more atoms of one element than the model has slots
    user_mistake(code, err, "--compositions", "'Fe30O40'", "slots per element")
    assert snapshot(layout.campaign_dir) == before


@pytest.mark.slow
def test_a_longer_training_reaches_the_stages_below_it(campaign):
    """The demo rerun: the same training resumed to more steps is a new model; its old samples must go."""
    run, layout = campaign
    relax_flow(run, EMT)  # relaxed candidates of the first model
    same = train_flow(run, TrainParams(max_steps=1, batch_size=4, device="cpu"))  # nothing left to train
    assert same["resumed_from"] == 1 and generate_flow(run, GENERATE)["n_reused_parts"] == 2
    old = read_relaxed(layout.relaxed)

    longer = train_flow(run, TrainParams(max_steps=2, batch_size=4, device="cpu"))  # budget raised: resumes
    assert longer["step"] == 2
    regenerated = generate_flow(run, GENERATE)
    assert regenerated["n_reused_parts"] == 0 and regenerated["n_generated"] == 4
    assert read_record(layout, "generate").about["checkpoint_step"] == 2
    assert not layout.relaxed.exists()  # relaxations of the old model are not this model's
    (kept,) = (layout.campaign_dir / SUPERSEDED).iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["generate", "reason.txt", "relax"]
    assert "checkpoint changed (checkpoint_step 1 -> 2)" in (kept / "reason.txt").read_text()
    pd.testing.assert_frame_equal(read_relaxed(kept / "relax"), old)  # set aside, not lost


@pytest.mark.slow
def test_relax_with_another_calculator_stops_and_overwrite_redoes_it(tmp_path, capsys):
    layout = make_run(tmp_path, "c", n_candidates=3)
    run = RunParams(campaign="c", results_root=str(tmp_path))
    relax_flow(run, EMT)
    relaxed = snapshot(layout.relaxed)
    code, err = cli(capsys, "relax", "--campaign", "c", "--results-root", str(tmp_path), "--calculator", "chgnet",
                    "--chunk-size", "2", "--relax-steps", "200", "--time-limit", "30")
    user_mistake(code, err, 'calculator "emt" -> "chgnet"', "--overwrite relax")
    assert snapshot(layout.relaxed) == relaxed  # the EMT energies are neither reused as CHGNet's nor lost

    code, _ = cli(capsys, "relax", "--campaign", "c", "--results-root", str(tmp_path), "--calculator", "emt",
                  "--chunk-size", "2", "--relax-steps", "200", "--time-limit", "30", "--fmax", "0.2", "--overwrite")
    assert code == 0
    assert read_record(layout, "relax").settings["fmax"] == 0.2 and finished_ids(layout.relaxed) == {
        f"c-gen-{i:05d}" for i in range(3)}
    (kept,) = (tmp_path / "c" / SUPERSEDED).iterdir()
    assert snapshot(kept / "relax") == {kept / "relax" / p.relative_to(layout.relaxed): b for p, b in relaxed.items()}


@pytest.mark.slow
def test_an_edited_csv_is_fetched_again_and_reaches_tensorize(tmp_path):
    csv = perov5_test_csv(tmp_path / "mine.csv", 7)
    run = RunParams(campaign="e", results_root=str(tmp_path / "runs"))
    layout = run.layout()
    assert fetch_flow(run, DatasetSource.parse(str(csv)))["n_structures"] == 7
    assert tensorize_flow(run, TensorizeParams())["n_encoded"] == 7
    assert fetch_flow(run, DatasetSource.parse(str(csv)))["reused"]  # unchanged file: resumed

    perov5_test_csv(csv, 3)  # the user edits the file in place
    again = fetch_flow(run, DatasetSource.parse(str(csv)))
    assert not again["reused"] and again["n_structures"] == 3
    (kept,) = (layout.campaign_dir / SUPERSEDED).iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["fetch", "reason.txt", "tensorize"]
    assert len(pd.read_parquet(kept / "fetch" / "structures.parquet")) == 7  # the old table is kept aside
    assert tensorize_flow(run, TensorizeParams())["n_encoded"] == 3  # the change reached the stage below


def test_changed_settings_stop_only_the_stages_they_would_make_stale(tmp_path, capsys, no_server):
    """Checks on records alone: a fresh campaign, an unchanged one and one with other settings (no server)."""
    from unimat_core.provenance import StageRecord, reconcile

    layout = RunLayout(tmp_path, "p")
    reconcile(layout, StageRecord("tensorize", TensorizeParams().settings(), {"fetch": "f1"}))
    (layout.tensors).mkdir(parents=True)
    (layout.tensors / "spec.json").write_text("{}")
    code, err = cli(capsys, "tensorize", "--campaign", "p", "--results-root", str(tmp_path), "--crop-grid")
    assert code == 1 and "`fetch` stage" in err  # its input is missing: named before its settings
    layout.structures.parent.mkdir(parents=True)
    records_to_frame([Structure(Lattice.cubic(4), ["Cu"], [[0, 0, 0]])], ["cu"], source="t").to_parquet(
        layout.structures)
    code, err = cli(capsys, "tensorize", "--campaign", "p", "--results-root", str(tmp_path), "--crop-grid")
    user_mistake(code, err, "crop_grid false -> true", "--overwrite tensorize")
    code, err = cli(capsys, "tensorize", "--campaign", "p", "--results-root", str(tmp_path), "--shard-size", "7",
                    "--crop-grid", "--overwrite", "train")  # overwriting a later stage does not cover this one
    user_mistake(code, err, "--overwrite tensorize")


# ---- one bad row is a row; a damaged part is redone --------------------------------------------------------

@pytest.mark.slow
def test_an_unreadable_row_is_a_row_and_damaged_parts_are_set_aside_and_redone(tmp_path):
    layout = make_run(tmp_path, "b", n_candidates=4)  # part 00000: Cu4, Cu3Au, AlNi3, Ag2Au2; 00001: 1 invalid
    first = layout.generated / "part-00000.parquet"
    frame = pd.read_parquet(first)
    frame.loc[1, "structure"] = '{"@module": "pymatgen.core.structure", garbage'  # Cu3Au's row
    frame.to_parquet(first, index=False)
    run = RunParams(campaign="b", results_root=str(tmp_path))

    result = relax_flow(run, EMT)
    assert result["n_relaxed"] == 4 and result["n_chunks"] == 2  # every chunk ran
    relaxed = read_relaxed(layout.relaxed).set_index("id")
    assert relaxed.loc["b-gen-00001", "error"].startswith("unreadable structure: JSONDecodeError")
    assert relaxed.drop(index="b-gen-00001")["converged"].all()

    parts = sorted(layout.relaxed.glob("part-*.parquet"))
    damaged = parts[1]
    lost = set(pq.read_table(damaged, columns=["id"]).column("id").to_pylist())
    damaged.write_bytes(damaged.read_bytes()[:200])  # a copy cut short
    kept = {p: p.stat().st_mtime_ns for p in parts if p != damaged}
    again = relax_flow(run, EMT)
    assert again["n_relaxed_now"] == len(lost) and again["n_relaxed"] == 4
    assert (layout.relaxed / "_damaged" / damaged.name).exists()
    ids = [i for p in sorted(layout.relaxed.glob("part-*.parquet")) for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
    assert sorted(ids) == [f"b-gen-{i:05d}" for i in range(4)]  # each id exactly once
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished chunks untouched

    score = score_flow(run, EMT, ScoreParams(reference_size=0))  # the unreadable row does not block scoring
    assert score["scores"]["n_candidates"] == 4 and score["scores"]["n_scored"] <= 3
    scores = pd.read_parquet(layout.scores).set_index("id")
    assert scores.loc["b-gen-00001", "relax_error"].startswith("unreadable structure")


@pytest.mark.slow
def test_a_damaged_generate_part_is_sampled_again(campaign):
    run, layout = campaign
    part = layout.generated / "part-00001.parquet"
    original = pd.read_parquet(part)
    part.write_bytes(b"PAR1 not really")
    result = generate_flow(run, GENERATE)
    assert result["n_reused_parts"] == 1 and result["n_generated"] == 4
    assert (layout.generated / "_damaged" / "part-00001.parquet").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(part), original)  # same seed: the part it should have been


def perov5_table(folder: Path, n: int) -> pd.DataFrame:
    """The first `n` perov_5 test crystals as a structure table."""
    return read_cdvae_csv(perov5_test_csv(folder / "perov_5.csv", n), workers=1).structures


def test_tensorize_leaves_out_unreadable_rows_with_their_reason(tmp_path):
    frame = perov5_table(tmp_path, 6)
    frame.loc[2, "structure"] = "not json"
    summary = tensorize_frame(frame, tmp_path / "ds")
    assert summary.n_encoded == 5 and summary.n_rejected == 1
    rejected = pd.read_parquet(tmp_path / "ds" / REJECTED)
    assert rejected["id"].tolist() == [frame.loc[2, "id"]] and rejected["reason"][0].startswith("unreadable structure")


def test_emt_failures_keep_their_own_reason(tmp_path):
    """After EMT fails on an element it lacks, the next structures get their own outcome, not its debris."""
    layout = RunLayout(tmp_path, "emt")
    srtio3 = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                       [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cu = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    ids = write_generated(layout, [srtio3, srtio3.copy(), cu, srtio3.copy()], n_invalid=0)
    summary = relax_ids(layout.generated, ids, layout.relaxed / "part-00000.parquet", CalculatorConfig("emt"),
                        RelaxConfig(max_steps=50, time_limit_s=30))
    errors = read_relaxed(layout.relaxed).set_index("id")["error"]
    assert summary["n"] == 4
    assert all("No EMT-potential for Ti" in errors[i] for i in (ids[0], ids[1], ids[3])), errors.tolist()
    assert "EMT" not in errors[ids[2]] and "Error" not in errors[ids[2]]  # fcc Cu relaxes (or runs out of steps)


# ---- user mistakes: one or two lines naming the option, file or row; exit 2; before any server ----------

def test_mistakes_in_options_and_files_stop_before_any_server(tmp_path, capsys, monkeypatch, no_server):
    root = ["--results-root", str(tmp_path / "runs")]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    picture = tmp_path / "picture.csv"
    picture.write_bytes(bytes(range(256)) * 8)
    hull = tmp_path / "hull.csv"
    hull.write_text("id,composition,energy_per_atom,source\nli,Li,-1.9,mine\no,O2,abc,mine\nq,Qq2O,-3.0,mine\n")
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    monkeypatch.delenv("MP_API_KEY", raising=False)
    cases = [
        (["generate", *root, "--compositions", "Xx2O3"], ["--compositions", "Xx is not an element"]),
        (["campaign", *root, "--compositions", "Fe30O40", "--max-atoms-per-element", "3"],
         ["--compositions", "'Fe30O40'", "--max-atoms-per-element 3"]),
        (["fetch", *root, "--source", str(empty)], ["--source", "empty.csv is empty"]),
        (["fetch", *root, "--source", str(picture)], ["--source", "picture.csv is not a CSV file"]),
        (["fetch", *root, "--source", "mp"], ["--source mp", "MP_API_KEY is not set", "--source perov_5"]),
        (["score", *root, "--reference", str(hull)],
         ["--reference", "hull.csv", "row 2 (id 'o'): energy_per_atom 'abc'", "row 3 (id 'q')", "unknown element(s) Qq"]),
        (["fetch", "--results-root", str(a_file / "runs")], ["--results-root", "results.txt is a file"]),
        (["relax", *root, "--overwrite", "relaxing"], ["--overwrite", "'relax'"]),
        (["fetch", *root, "--source", "perov_5", "--splits", "train"], ["--source", "no bundled split(s) ['train']"]),
    ]
    if not torch_cuda_available():
        cases.append((["campaign", *root, "--device", "cuda"], ["--device", "no CUDA device"]))
    for args, expected in cases:
        start = time.perf_counter()
        code, err = cli(capsys, *args)
        user_mistake(code, err, *expected)
        assert time.perf_counter() - start < 10, args
        assert "--csv" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "hull.csv", "picture.csv", "results.txt"]


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow  # the fetch flow runs (Prefect's server) before the rows are parsed
def test_a_table_none_of_whose_rows_reads_stops_at_fetch_naming_the_reasons(tmp_path):
    path = tmp_path / "broken.csv"
    pd.DataFrame({"material_id": ["a", "b"], "cif": ["data_a\nnot a cif", "data_b\nnor this"]}).to_csv(path)
    run = RunParams(campaign="n", results_root=str(tmp_path / "runs"))
    with pytest.raises(UserInputError, match=r"--source broken: none of its 2 rows could be read \(2x CIF does not parse\)"):
        fetch_flow(run, DatasetSource.parse(str(path)))
    assert pd.read_parquet(run.layout().fetch_rejected)["id"].tolist() == ["a", "b"]  # each with its reason
    assert not run.layout().structures.exists()


def test_a_user_mistake_leaves_prefect_untouched(tmp_path):
    """As a user runs it: a fresh PREFECT_HOME stays empty (no server started, no database made)."""
    home = tmp_path / "home"
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "fetch", "--results-root", str(tmp_path / "runs"),
                           "--source", str(tmp_path / "missing.csv")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("missing.csv not found"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not home.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow  # a subprocess with its server: fetch and tensorize run before the mistake can be known
def test_a_composition_beyond_the_fitted_l_stops_a_new_campaign_before_training(tmp_path):
    csv = perov5_test_csv(tmp_path / "mine.csv", 12)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "campaign", "--campaign", "f", "--results-root",
                           str(tmp_path / "runs"), "--source", str(csv), "--compositions", "Fe30O40", "--stop-after",
                           "generate", "--max-steps", "1"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == ("unimat campaign: --compositions: 'Fe30O40': 30 Fe atoms exceed "
                                                    "the model's 3 slots per element (L) (tensorized data)")
    assert sorted(p.name for p in (tmp_path / "runs" / "f").iterdir()) == ["fetch", "tensorize"]  # no training spent


# ---- silent input damage becomes a decision the user sees -------------------------------------------------

def test_deuterium_is_rejected_with_its_reason_not_turned_into_hydrogen(tmp_path):
    water = Structure(Lattice.cubic(4.0), ["H", "H", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.25, 0.25, 0.5]])
    cif = water.to(fmt="cif")
    heavy = cif.replace("  H  H0 ", "  D  D0 ").replace("  H  H1 ", "  D  D1 ")
    assert heavy != cif
    path = tmp_path / "train.csv"
    pd.DataFrame({"material_id": ["light", "heavy"], "cif": [cif, heavy]}).to_csv(path)
    result = read_cdvae_csv(path, workers=1)
    assert result.structures["id"].tolist() == ["light"]
    assert result.rejected["id"].tolist() == ["heavy"] and "isotope D of H" in result.rejected["reason"][0]


def test_one_huge_cell_is_left_out_instead_of_widening_every_tensor(tmp_path):
    frame = perov5_table(tmp_path, 40)
    huge = structure_from_json(frame.loc[0, "structure"])
    huge.make_supercell([5, 4, 3])  # 300 sites: 60 copies of a 5-atom cell
    table = pd.concat([frame, records_to_frame([huge], ["huge"], split="test", source="t")], ignore_index=True)

    capped = tensorize_frame(table, tmp_path / "capped", max_sites=64)
    assert capped.max_atoms_per_element == 3 and capped.n_encoded == 40 and not capped.warnings
    rejected = pd.read_parquet(tmp_path / "capped" / REJECTED)
    assert rejected["id"].tolist() == ["huge"] and rejected["reason"][0] == "300 sites > max_sites 64 (the tensorize size cap)"

    uncapped = tensorize_frame(table, tmp_path / "uncapped", max_sites=None)  # the user lifted the cap: warned
    assert uncapped.max_atoms_per_element == max(huge.composition.values()) >= 60
    assert "set by 1 of 41 crystals (e.g. huge)" in uncapped.warnings[0] and "--max-atoms-per-element 3" in uncapped.warnings[0]
    assert TensorDataset(tmp_path / "capped").spec.max_atoms_per_element == 3


# ---- no leaks: servers die with their command; tests keep their own Prefect home ---------------------------

def wait_for_a_part(proc: subprocess.Popen, folder: Path, timeout_s: float = 240) -> None:
    """Until the running stage has finished its first chunk (so a kill lands mid-stage)."""
    deadline = time.monotonic() + timeout_s
    while not any(folder.glob("part-*.parquet")):
        assert proc.poll() is None, "the stage ended before writing a part"
        assert time.monotonic() < deadline, f"no part file within {timeout_s:g} s"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_stage_leaves_no_server_behind_and_resumes(tmp_path):
    """`kill -9` of a running `unimat relax`: its temporary server goes with it, every finished chunk is a
    complete part, and the rerun relaxes exactly the rest."""
    layout = make_run(tmp_path, "k", n_candidates=8, supercell=2)  # 32-atom cells: about a second each with EMT
    args = ["relax", "--campaign", "k", "--results-root", str(tmp_path), "--calculator", "emt", "--chunk-size", "1",
            "--relax-steps", "300", "--fmax", "0.01", "--time-limit", "60"]
    # the tests' Prefect home: its database is migrated already
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[int] = []
    try:
        wait_for_a_part(proc, layout.relaxed)
        children = _children(proc.pid)
        assert children, "the command runs its temporary server as a child"
        os.kill(proc.pid, signal.SIGKILL)  # the command only, as `kill -9 <pid>` does
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children), "the temporary Prefect server outlived its command"
    finally:
        for pid in [proc.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    parts = sorted(layout.relaxed.glob("part-*.parquet"))
    assert 1 <= len(parts) < 8, "killed mid-stage: some chunks must be missing"
    done = [i for part in parts for i in pq.read_table(part, columns=["id"]).column("id").to_pylist()]
    assert len(done) == len(set(done)) == len(parts)  # complete parts only; a half-written chunk is a hidden temp
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}

    assert main(args) == 0
    assert finished_ids(layout.relaxed) == {f"k-gen-{i:05d}" for i in range(8)}
    ids = [i for p in sorted(layout.relaxed.glob("part-*.parquet")) for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
    assert len(ids) == 8  # each id exactly once
    for name, stamp in stamps.items():  # finished chunks were not redone
        assert (layout.relaxed / name).stat().st_mtime_ns == stamp


def test_tests_keep_their_own_prefect_home(tmp_path):
    """`make test` exports the demo's PREFECT_HOME (and a user may export PREFECT_API_URL): the tests replace both."""
    assert os.environ["PREFECT_HOME"] == TEST_PREFECT_HOME and "PREFECT_API_URL" not in os.environ
    demo = tmp_path / ".prefect"
    env = {**os.environ, "PREFECT_HOME": str(demo), "PREFECT_API_URL": "http://127.0.0.1:4200/api",
           "PYTHONPATH": str(REPO)}
    env.pop("UNIMAT_TEST_PREFECT_HOME", None)
    env.pop("PYTEST_XDIST_WORKER", None)  # outside xdist: the one home, not a worker's
    code = "import os, tests.conftest; print(os.environ['PREFECT_HOME'], os.environ.get('PREFECT_API_URL'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.stdout.split() == [str(REPO / ".prefect-test"), "None"], out.stderr
    assert not demo.exists()
    recipe = (REPO / "Makefile").read_text().split("\ntest:")[1].split("\n\n")[0]
    assert "PREFECT_HOME=$(CURDIR)/.prefect-test" in recipe


# ---- campaigns side by side ------------------------------------------------------------------------------

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
    # the two campaign folders, and the reference cache all campaigns share by design (keyed by calculator settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_reference_cache", "alpha", "beta"]
    for name, layout in layouts.items():
        relaxed, scores = results[name]
        assert relaxed["n_relaxed"] == 4 and relaxed["out_dir"] == str(layout.relaxed)
        assert all(i.startswith(f"{name}-gen-") for i in finished_ids(layout.relaxed))
        assert set(pd.read_parquet(layout.scores)["id"]) == {f"{name}-gen-{i:05d}" for i in range(4)}
        assert scores["scores"]["path"] == str(layout.scores)
        for path, stamp in before[name].items():  # inputs of each campaign untouched
            assert path.stat().st_mtime_ns == stamp
