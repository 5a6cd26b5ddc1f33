"""The relax stage with its chunk tasks on `dask_jobqueue.SLURMCluster` workers: real sbatch jobs on the test
cluster, the scheduler in the flow run's process, driven the way a user does (`python -m deployments.run
relax-on-dask` with a JobQueueConfig as JSON), reporting to the Prefect server on PostgreSQL.

One stage run proves both things (each SLURM run costs a minute or more of job starts and worker imports on
2 cores): one of its two worker jobs is scancelled mid-stage, and its rows still equal the local run's."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.batch import read_relaxed
from tests.cli_output import summary_json
from tests.cluster.jobs import completed_jobs, job_info
from tests.cluster.leaks import api_leaks, file_leaks, job_script_leaks
from tests.deployments.server import REPO, tail
from tests.flows.helpers import candidates, write_generated
from unimat_core.run_layout import RunLayout

SECRET = "planted-mp-key-7f3e9a1c"   # MP_API_KEY of every command here: it must surface nowhere
RELAX = {"calculator": "emt", "chunk_size": 1, "max_steps": 100, "time_limit_s": 60}
RELAX_CLI = ["--calculator", "emt", "--chunk-size", "1", "--relax-steps", "100", "--time-limit", "60"]
EXACT = ["id", "formula", "converged", "steps", "error"]
CLOSE = ["energy_per_atom", "max_force"]


def prepare(root, campaign: str) -> RunLayout:
    """Generate-stage parts: 6 rattled fcc metals (2x2x2 supercells, 32 atoms: a chunk lasts long enough to be
    cancelled mid-stage), one bcc Fe that EMT cannot do, one failed decode."""
    layout = RunLayout(root, campaign)
    iron = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_generated(layout, [*candidates(6, seed=3, supercell=2), iron], n_invalid=1, per_part=4, prefix="g")
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


def parts(layout: RunLayout) -> dict[str, tuple[int, int]]:
    """The relax stage's part files: name -> (inode, mtime), which a rewrite would change."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in layout.relaxed.glob("part-*.parquet")}


@pytest.mark.slow
def test_relax_chunks_run_in_slurm_jobs_survive_a_cancelled_job_and_match_the_local_run(slurm, pg_prefect, tmp_path):
    """The relax stage on two SLURM worker jobs (one chunk of one candidate each at a time). As soon as the first
    chunk is written and both workers have joined the scheduler, the second job is scancelled: the stage still
    completes (Dask runs the lost chunk on the other worker), the chunks finished
    before the cancel are kept as they were, no chunk is written twice, and the rows equal, row by row, those of
    the same stage run locally with `unimat relax`."""
    local, on_slurm = prepare(tmp_path, "local"), prepare(tmp_path, "slurm")
    log, jobs_dir, name = tmp_path / "relax-on-slurm.log", tmp_path / "dask-jobs", "unimat-relax"
    proc = run_relax_on_slurm(slurm, pg_prefect, tmp_path, "slurm", slurm_config(jobs_dir, name), log)
    # the local reference runs meanwhile (its imports overlap the wait for the batch jobs)
    cli_log = tmp_path / "relax-local.log"
    with open(cli_log, "wb") as out:
        cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "relax", "--campaign", "local", "--results-root",
                                str(tmp_path), *RELAX_CLI], env=pg_prefect.client_env(MP_API_KEY=SECRET), cwd=REPO,
                               stdout=out, stderr=subprocess.STDOUT)
    running: set[str] = set()          # every unimat-relax job squeue showed running
    before_cancel: list[str] = []      # the two worker jobs (both joined) when the first chunk was written
    victim, kept = None, {}

    def registered(job: str) -> bool:   # the job's Dask worker joined the scheduler (its log, see slurm_config)
        return "Registered to:" in tail(jobs_dir / f"{name}-{job}.err", 10**6)

    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            now = slurm.run("squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i", check=False).stdout.split()
            running |= set(now)
            if victim is None and parts(on_slurm) and len(now) == 2 and all(map(registered, now)):
                before_cancel, victim = sorted(now), sorted(now)[-1]
                slurm.run("scancel", victim)
                kept = parts(on_slurm)
            time.sleep(0.25)
        assert proc.wait(timeout=60) == 0, tail(log)
        assert cli.wait(timeout=300) == 0, tail(cli_log)
    finally:
        for p in (proc, cli):
            if p.poll() is None:
                p.kill()
    summary = summary_json(log.read_text())

    # the chunks ran in batch jobs: squeue saw them running, SLURM recorded them, their workers joined the scheduler
    assert victim is not None, f"no chunk written while both workers were up:\n{tail(log)}\n{sorted(running)}"
    assert len(before_cancel) == 2 and set(before_cancel) <= running and all(map(registered, before_cancel))
    finished = {j["JobId"]: j for j in completed_jobs(slurm) if j.get("Name") == name}
    assert running <= set(finished), (running, finished)
    for job in running:
        info = job_info(slurm, job)
        assert info["Partition"] == "debug" and info["NodeList"] == "unimat-node" and info["NumCPUs"] == "1", info

    # the cancelled job: CANCELLED, and it cost only its unfinished chunk. Dask reruns that chunk on the other
    # worker; whether dask-jobqueue also gets a replacement job in first is a race with the stage's end (here the
    # remaining chunks take seconds), so a replacement is allowed, not required
    assert job_info(slurm, victim)["JobState"] == "CANCELLED"
    after = parts(on_slurm)
    assert kept and all(after[part] == stamp for part, stamp in kept.items()), (kept, after)
    assert summary["n_chunks"] == 7 and len(after) == 7, (summary, sorted(after))   # one part per chunk: none twice

    # the same rows as the local run (7 relaxed: 6 fcc metals + the failed Fe; the failed decode is skipped)
    a, b = rows(local), rows(on_slurm)
    assert a["id"].tolist() == b["id"].tolist() == [f"g-{i:05d}" for i in range(7)]
    assert a[EXACT].equals(b[EXACT])
    assert a["converged"].sum() == 6 and a.loc[6, "error"], a   # the relaxations did work, the Fe failed
    np.testing.assert_allclose(a[CLOSE].to_numpy(float), b[CLOSE].to_numpy(float), rtol=0, atol=1e-6, equal_nan=True)

    # the run is on the PostgreSQL server, completed
    flow_names = {f["id"]: f["name"] for f in pg_prefect.post("/flows/filter").raise_for_status().json()}
    runs = pg_prefect.post("/flow_runs/filter").raise_for_status().json()
    outer = [r for r in runs if flow_names[r["flow_id"]] == "relax-on-dask"
             and r["parameters"]["run"]["campaign"] == "slurm"]
    assert len(outer) == 1 and outer[0]["state"]["type"] == "COMPLETED"

    # the planted MP_API_KEY is in no job script, job or worker log, run folder or parquet, nor on the server
    leaks = (file_leaks([SECRET], tmp_path, slurm.log_dir) + job_script_leaks([SECRET], slurm, running)
             + api_leaks([SECRET], pg_prefect))
    assert not leaks, leaks
