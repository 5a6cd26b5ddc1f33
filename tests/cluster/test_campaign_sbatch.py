"""deployments/slurm/run_campaign.sbatch submitted with sbatch to the test cluster: a tiny campaign (EMT, a few
candidates) runs to completion inside the allocation, reports to the Prefect server on PostgreSQL, and its
results are read back; the planted MP_API_KEY it carries in its environment surfaces nowhere."""

from __future__ import annotations

import json
import sys

import pytest

from dft.batch import read_relaxed

from tests.cluster.jobs import submit, wait_job
from tests.cluster.leaks import api_leaks, file_leaks, job_script_leaks
from tests.conftest import perov5_test_csv
from tests.deployments.server import REPO

SBATCH = REPO / "deployments" / "slurm" / "run_campaign.sbatch"
SECRET = "planted-mp-key-c41d9b27"
STAGES = ["fetch", "tensorize", "train", "generate", "relax", "score", "evaluate"]


def tiny_campaign(root, csv) -> dict:
    """CampaignParams as JSON: 24 perov_5 crystals on the cropped grid, 2 training steps, 4 samples, EMT (which
    fails on these elements, recorded per candidate: the campaign must still finish), a 4-sample evaluation."""
    return {"run": {"campaign": "sbatch", "results_root": str(root)},
            "source": {"kind": "csv", "name": "tiny", "csv_paths": [str(csv)]}, "tensorize": {"crop_grid": True},
            "train": {"max_steps": 2, "batch_size": 8},
            "generate": {"num_samples": 4, "batch_size": 4, "steps": 2},
            "relax": {"calculator": "emt", "max_steps": 20, "time_limit_s": 20, "chunk_size": 2},
            "score": {"reference_size": 0},
            "evaluate": {"n_eval": 4, "n_workers": 1}}


@pytest.mark.slow
def test_run_campaign_sbatch_completes_a_tiny_campaign(slurm, pg_prefect, tmp_path):
    params = tiny_campaign(tmp_path / "runs", perov5_test_csv(tmp_path / "tiny.csv", 24))
    env = pg_prefect.client_env(MP_API_KEY=SECRET, UNIMAT_PYTHON=sys.executable)
    job = submit(slurm, "--cpus-per-task=1", "--mem=4G", "--time=00:30:00", f"--output={tmp_path}/%x-%j.out",
                 str(SBATCH), json.dumps(params), env=env, cwd=REPO)
    info = wait_job(slurm, job, timeout=1200)
    out = (tmp_path / f"unimat-campaign-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", out[-4000:]
    assert info["NodeList"] == "unimat-node" and info["NumCPUs"] == "1"

    # the results, read back: every stage's output, the relax stage made by the Dask step (its rows are EMT failures)
    campaign = tmp_path / "runs" / "sbatch"
    result = json.loads(out[out.rindex("\n{\n") + 1:])   # deployments.run prints the flow's result last
    assert list(result["seconds"]) == STAGES and result["relax"]["n_relaxed_now"] == 0, result  # relax: reused
    assert list((campaign / "generate").glob("part-*.parquet"))
    relaxed = read_relaxed(campaign / "relax")
    assert len(relaxed) == result["relax"]["n_relaxed"] and relaxed["id"].is_unique
    assert (campaign / "evaluate" / "summary.parquet").exists() and (campaign / "score").is_dir()

    # the runs on the PostgreSQL server: the sbatch's flow run and its stages, all completed
    flows = {f["id"]: f["name"] for f in pg_prefect.post("/flows/filter").raise_for_status().json()}
    runs = pg_prefect.post("/flow_runs/filter").raise_for_status().json()
    outer = [r for r in runs if flows[r["flow_id"]] == "campaign-on-dask"]
    assert len(outer) == 1 and outer[0]["state"]["type"] == "COMPLETED"
    threads = {stage: outer[0]["parameters"]["params"][stage]["cpu_threads"] for stage in ("train", "generate")}
    assert threads == {"train": 1, "generate": 1}, threads  # the allocation's cores (--cpus-per-task=1)
    inner = {flows[r["flow_id"]] for r in runs if r["start_time"] and r["start_time"] >= outer[0]["start_time"]}
    assert {"discovery-campaign", "relax", "score", "evaluate"} <= inner, inner

    leaks = (file_leaks([SECRET], tmp_path) + job_script_leaks([SECRET], slurm, [job])
             + api_leaks([SECRET], pg_prefect))
    assert not leaks, leaks
