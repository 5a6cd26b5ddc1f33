"""The relax stage with its chunk tasks on `dask_jobqueue.SLURMCluster` workers: real sbatch jobs on the test
cluster, the scheduler in the flow run's process, driven the way a user does (`python -m deployments.run
relax-on-dask` with a JobQueueConfig as JSON), reporting to the Prefect server on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.batch import read_relaxed
from tests.cluster.jobs import completed_jobs, job_info
from tests.cluster.leaks import api_leaks, file_leaks, job_script_leaks
from tests.deployments.server import REPO, tail
from tests.flows.helpers import candidates, write_generated
from unimat_core.run_layout import RunLayout

SECRET = "planted-mp-key-7f3e9a1c"   # MP_API_KEY of every command here: it must surface nowhere
RELAX = {"calculator": "emt", "chunk_size": 2, "max_steps": 100, "time_limit_s": 60}
RELAX_CLI = ["--calculator", "emt", "--chunk-size", "2", "--relax-steps", "100", "--time-limit", "60"]
EXACT = ["id", "formula", "converged", "steps", "error"]
CLOSE = ["energy_per_atom", "max_force"]


def prepare(root, campaign: str) -> RunLayout:
    """Generate-stage parts: 6 rattled fcc metals, one bcc Fe that EMT cannot do, one failed decode."""
    layout = RunLayout(root, campaign)
    iron = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_generated(layout, [*candidates(6, seed=3), iron], n_invalid=1, per_part=4, prefix="g")
    return layout


def rows(layout: RunLayout):
    return read_relaxed(layout.relaxed)[EXACT + CLOSE].sort_values("id").reset_index(drop=True)


def slurm_config(log_dir, job_name: str, jobs: int = 2) -> dict:
    """`jobs` batch jobs of one single-core worker each, scheduler and workers on loopback. A fixed number
    (minimum = maximum) spares the adaptive retirement of idle workers, which costs a minute here."""
    return {"kind": "slurm", "queue": "debug", "cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00",
            "interface": "lo", "minimum_jobs": jobs, "maximum_jobs": jobs, "job_name": job_name,
            "log_directory": str(log_dir), "local_directory": str(log_dir)}


def run_relax_on_slurm(slurm, server, root, campaign: str, cluster: dict, log, relax: dict = RELAX) -> subprocess.Popen:
    params = {"run": {"campaign": campaign, "results_root": str(root)}, "relax": relax, "cluster": cluster}
    env = slurm.env(server.client_env(MP_API_KEY=SECRET))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "deployments.run", "relax-on-dask", "--params", json.dumps(params)],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def watch_queue(slurm, proc: subprocess.Popen, job_name: str, timeout: float) -> set[str]:
    """Ids of the jobs named `job_name` that squeue showed running while `proc` ran."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        out = slurm.run("squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i", check=False).stdout
        seen |= set(out.split())
        time.sleep(0.5)
    return seen


@pytest.mark.slow
def test_relax_chunks_run_in_slurm_jobs_and_match_the_local_run(slurm, pg_prefect, tmp_path):
    local, on_slurm = prepare(tmp_path, "local"), prepare(tmp_path, "slurm")
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "relax", "--campaign", "local", "--results-root",
                          str(tmp_path), *RELAX_CLI], env=pg_prefect.client_env(MP_API_KEY=SECRET), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]

    log, jobs_dir = tmp_path / "relax-on-slurm.log", tmp_path / "dask-jobs"
    proc = run_relax_on_slurm(slurm, pg_prefect, tmp_path, "slurm", slurm_config(jobs_dir, "unimat-relax"), log)
    try:
        running = watch_queue(slurm, proc, "unimat-relax", timeout=600)
        assert proc.wait(timeout=60) == 0, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(log.read_text()[log.read_text().index("{"):])

    # the chunks ran in batch jobs: squeue saw them running, SLURM recorded them, their workers joined the scheduler
    assert running, f"no unimat-relax job was seen running:\n{tail(log)}\n{slurm.logs()}"
    finished = {j["JobId"]: j for j in completed_jobs(slurm) if j.get("Name") == "unimat-relax"}
    assert running <= set(finished), (running, finished)
    for job in running:
        info = job_info(slurm, job)
        assert info["Partition"] == "debug" and info["NodeList"] == "unimat-node" and info["NumCPUs"] == "1", info
    worker_logs = "".join(p.read_text() for p in jobs_dir.glob("*.err"))
    assert worker_logs.count("Registered to:") >= len(running), worker_logs[-3000:]

    # the same rows as the local run (7 relaxed: 6 fcc metals + the failed Fe; the failed decode is skipped)
    assert summary["n_chunks"] == 4, summary
    a, b = rows(local), rows(on_slurm)
    assert a["id"].tolist() == b["id"].tolist() == [f"g-{i:05d}" for i in range(7)]
    assert a[EXACT].equals(b[EXACT])
    np.testing.assert_allclose(a[CLOSE].to_numpy(float), b[CLOSE].to_numpy(float), rtol=0, atol=1e-6, equal_nan=True)

    # both runs are on the PostgreSQL server; the chunk tasks completed there
    flow_names = {f["id"]: f["name"] for f in pg_prefect.post("/flows/filter").raise_for_status().json()}
    runs = pg_prefect.post("/flow_runs/filter").raise_for_status().json()
    outer = [r for r in runs if flow_names[r["flow_id"]] == "relax-on-dask"
             and r["parameters"]["run"]["campaign"] == "slurm"]
    assert len(outer) == 1 and outer[0]["state"]["type"] == "COMPLETED"

    # the planted MP_API_KEY is in no job script, job or worker log, run folder or parquet, nor on the server
    leaks = (file_leaks([SECRET], tmp_path, slurm.log_dir) + job_script_leaks([SECRET], slurm, running)
             + api_leaks([SECRET], pg_prefect))
    assert not leaks, leaks


@pytest.mark.slow
def test_a_cancelled_worker_job_loses_only_its_unfinished_chunk(slurm, pg_prefect, tmp_path):
    """scancel one of the two worker jobs as soon as the first chunk is written: the stage still completes (Dask
    runs the lost chunk elsewhere and SLURM gets a replacement job), the chunks finished before the cancel are
    kept as they were, and no chunk is written twice."""
    layout = RunLayout(tmp_path, "killed")
    write_generated(layout, candidates(8, seed=5, supercell=2), n_invalid=0, per_part=4, prefix="k")
    log, jobs_dir = tmp_path / "relax-on-slurm.log", tmp_path / "dask-jobs"
    params_relax = {**RELAX, "chunk_size": 1}
    proc = run_relax_on_slurm(slurm, pg_prefect, tmp_path, "killed", slurm_config(jobs_dir, "unimat-kill"), log,
                              relax=params_relax)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and not list(layout.relaxed.glob("part-*.parquet")):
            time.sleep(0.2)
        running = slurm.run("squeue", "-h", "-n", "unimat-kill", "-t", "RUNNING", "-o", "%i").stdout.split()
        assert proc.poll() is None and len(running) == 2, (running, tail(log))
        victim = sorted(running)[-1]
        slurm.run("scancel", victim)
        kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in layout.relaxed.glob("part-*.parquet")}
        assert proc.wait(timeout=600) == 0, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert job_info(slurm, victim)["JobState"] == "CANCELLED"
    jobs = {j["JobId"] for j in completed_jobs(slurm) if j.get("Name") == "unimat-kill"}
    assert len(jobs) >= 3, f"a replacement job was submitted: {jobs}"
    parts = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in layout.relaxed.glob("part-*.parquet")}
    assert kept and all(parts[name] == stamp for name, stamp in kept.items()), (kept, parts)
    assert len(parts) == 8, sorted(parts)   # one part per chunk: nothing written twice
    frame = read_relaxed(layout.relaxed)
    assert sorted(frame["id"]) == [f"k-{i:05d}" for i in range(8)] and frame["converged"].all()
