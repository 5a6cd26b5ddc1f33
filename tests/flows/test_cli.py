"""The `unimat` CLI runs real Prefect flows (ephemeral server on SQLite under PREFECT_HOME)."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from pymatgen.core import Composition

from flows.cli import main
from tests.cli_output import summary_json
from tests.conftest import perov5_test_csv
from unimat_core.structure_table import read_structures
from unimat_core.tensor_store import TensorDataset


@pytest.fixture
def small_csv(tmp_path):
    return perov5_test_csv(tmp_path / "test.csv", 40)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `unimat` in its own process, as a user would (Prefect's console logging owns stdout)."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=timeout)


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary_json(proc.stdout)


@pytest.mark.slow
def test_campaign_runs_all_stages_then_resumes(tmp_path, small_csv):
    args = ["campaign", "--campaign", "t1", "--results-root", str(tmp_path / "runs"), "--source", str(small_csv),
            "--max-steps", "4", "--batch-size", "8", "--num-samples", "6", "--gen-batch-size", "4", "--steps", "3",
            "--calculator", "chgnet", "--relax-steps", "15", "--time-limit", "20", "--reference-size", "0",
            "--n-eval", "6", "--eval-workers", "1"]
    first = _result(run_cli(*args, timeout=900))  # every stage incl. CHGNet; minutes on a busy 2-core box
    assert list(first["seconds"]) == ["fetch", "tensorize", "train", "generate", "relax", "score", "evaluate"]
    assert first["fetch"]["n_structures"] == 40 and not first["fetch"]["reused"]
    assert first["tensorize"]["n_encoded"] == 40 and not first["tensorize"]["reused"]
    assert first["train"]["step"] == 4 and first["train"]["resumed_from"] == 0
    assert first["generate"]["n_generated"] == 6 and first["generate"]["n_parts"] == 2
    parts = sorted((tmp_path / "runs" / "t1" / "generate").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    table = read_structures(tmp_path / "runs" / "t1" / "fetch" / "structures.parquet")
    assert len(table) == 40 and (table["split"] == "test").all()
    assert len(TensorDataset(tmp_path / "runs" / "t1" / "tensorize" / "dataset")) == 40
    # every validly decoded sample is relaxed (or recorded as skipped/failed with its reason)
    assert first["relax"]["n_relaxed"] == first["generate"]["n_valid"]
    if first["relax"]["n_relaxed"]:
        scores = pd.read_parquet(tmp_path / "runs" / "t1" / "score" / "scores.parquet")
        assert len(scores) == first["relax"]["n_relaxed"]
        assert first["sun"]["n_candidates"] == len(scores) and first["sun"]["uniqueness_known"]
    assert first["evaluate"]["n_generated"] == 6
    assert (tmp_path / "runs" / "t1" / "evaluate" / "per_structure.parquet").exists()
    assert (tmp_path / "runs" / "t1" / "train" / "loss.png").exists()

    second = _result(run_cli(*args, timeout=900))
    assert second["fetch"]["reused"] and second["tensorize"]["reused"]
    assert second["train"]["resumed_from"] == 4 and second["generate"]["n_reused_parts"] == 2
    assert second["relax"]["n_relaxed_now"] == 0 and second["relax"]["n_done_before"] == first["relax"]["n_relaxed"]


@pytest.mark.slow  # a subprocess with its own Prefect server start
def test_campaign_stop_after_runs_only_the_first_stages(tmp_path, small_csv):
    result = _result(run_cli("campaign", "--campaign", "t2", "--results-root", str(tmp_path), "--source",
                             str(small_csv), "--stop-after", "tensorize", "--crop-grid"))
    assert list(result["seconds"]) == ["fetch", "tensorize"]
    assert sorted(p.name for p in (tmp_path / "t2").iterdir()) == ["fetch", "tensorize"]
    grid = TensorDataset(tmp_path / "t2" / "tensorize" / "dataset").spec.grid  # --crop-grid reached the encoder
    table = read_structures(tmp_path / "t2" / "fetch" / "structures.parquet")
    elements = {el.Z for formula in table["formula"] for el in Composition(formula).elements}
    assert grid.is_cropped and set(grid.elements) == elements and grid.shape[0] * grid.shape[1] < 162


def test_stage_without_its_input_names_the_missing_stage(tmp_path):
    proc = run_cli("tensorize", "--campaign", "empty", "--results-root", str(tmp_path))
    assert proc.returncode == 1
    err = proc.stderr
    assert "structures.parquet does not exist" in err and "`fetch` stage" in err


def test_bad_parameters_fail_before_any_work(tmp_path, capsys):
    start = time.perf_counter()
    assert main(["fetch", "--campaign", "bad name!", "--results-root", str(tmp_path)]) == 2
    assert main(["fetch", "--source", str(tmp_path / "missing.csv"), "--results-root", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert "campaign" in err and "not found" in err
    assert not any(tmp_path.iterdir())


def test_relax_without_generated_structures_names_the_generate_stage(tmp_path):  # found before any server starts
    proc = run_cli("relax", "--campaign", "nogen", "--results-root", str(tmp_path), "--calculator", "emt")
    assert proc.returncode == 1
    assert "generate/part-*.parquet does not exist" in proc.stderr and "`generate` stage" in proc.stderr


def test_bad_stage_parameters_fail_before_any_work(tmp_path, capsys):
    root = ["--results-root", str(tmp_path)]
    assert main(["relax", *root, "--calculator", "nosuchcalc"]) == 2
    assert main(["relax", *root, "--chunk-size", "0"]) == 2
    assert main(["score", *root, "--reference", str(tmp_path / "nohull.csv")]) == 2
    assert main(["evaluate", *root, "--eval-dataset", "nosuchset"]) == 2
    assert main(["campaign", *root, "--fmax", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--calculator: unknown calculator 'nosuchcalc'" in err and "--chunk-size" in err and "nohull.csv" in err
    assert "--eval-dataset" in err and "nosuchset" in err and "--fmax" in err
    assert len(err.splitlines()) == 5  # one line per mistake, no traceback
    assert not any(tmp_path.iterdir())


def test_generate_without_a_model_names_the_train_stage(tmp_path):
    proc = run_cli("generate", "--campaign", "nomodel", "--results-root", str(tmp_path))
    assert proc.returncode == 1
    assert "last.pt does not exist" in proc.stderr and "`train` stage" in proc.stderr


@pytest.mark.slow
def test_csp_evaluation_and_a_shipped_model_from_the_command_line(tmp_path, small_csv):
    root = ["--results-root", str(tmp_path / "runs")]
    _result(run_cli("campaign", "--campaign", "csp", *root, "--source", str(small_csv), "--stop-after", "train",
                    "--max-steps", "3", "--batch-size", "8", "--max-minutes", "1"))
    csp = _result(run_cli("evaluate", "--campaign", "csp", *root, "--task", "csp", "--k", "2", "--csp-targets", "3",
                          "--eval-workers", "1", "--eval-dataset", "perov_5"))
    assert csp["k"] == 2 and csp["n_targets"] == 3 and 0 <= csp["match_rate"] <= 1
    per_target = pd.read_parquet(tmp_path / "runs" / "csp" / "evaluate" / "csp-k2" / "per_target.parquet")
    assert len(per_target) == 3 and set(per_target["n_samples"]) == {2}
    assert "k = 2, 3 test crystals, perov_5" in (tmp_path / "runs" / "csp" / "evaluate" / "csp-k2" / "summary.md").read_text()

    shipped = _result(run_cli("generate", "--campaign", "shipped", *root, "--model", "pretrained:perov_5",
                              "--num-samples", "4", "--steps", "5"))
    assert shipped["n_generated"] == 4
    generated = pd.concat(pd.read_parquet(p) for p in (tmp_path / "runs" / "shipped" / "generate").glob("part-*.parquet"))
    assert generated["source"].str.startswith("unimat:pretrained:perov_5@step").all()  # which model made them
    proc = run_cli("generate", "--campaign", "shipped2", *root, "--model", "pretrained:nope")
    assert proc.returncode == 2 and "unknown pretrained model 'nope'" in proc.stderr
