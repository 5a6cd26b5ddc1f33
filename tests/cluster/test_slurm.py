"""The test SLURM cluster itself (tools/slurm_cluster.py): a real slurmctld + slurmd + munged on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import require_slurm, slurm_cluster
from tests.cluster.jobs import completed_jobs, job_info, submit, wait_job


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a dead child that its parent, maybe init, has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_folder_too_deep_for_the_job_sockets_fails_before_starting(tmp_path):
    """slurmd's job-step sockets live in the cluster folder: past 107 characters jobs would hang PENDING."""
    deep = slurm_cluster.SlurmCluster(tmp_path / ("x" * 100))
    with pytest.raises(RuntimeError, match="too deep for slurmd's job sockets"):
        deep.check_socket_paths()
    slurm_cluster.SlurmCluster(Path("/tmp/c")).check_socket_paths()


def test_one_node_with_this_machines_cores_in_one_partition(slurm):
    cores, memory_mb = slurm_cluster.machine_size()
    node = dict(kv.split("=", 1) for kv in slurm.run("scontrol", "show", "node", "-o").stdout.split() if "=" in kv)
    assert node["NodeName"] == slurm_cluster.NODE and node["State"] == "IDLE", node
    assert int(node["CPUTot"]) == cores == os.cpu_count()
    assert int(node["RealMemory"]) == memory_mb
    assert slurm.run("sinfo", "-h", "-o", "%P %a %D").stdout.split() == [f"{slurm_cluster.PARTITION}*", "up", "1"]


def test_a_batch_job_runs_niced_and_is_recorded(slurm, tmp_path):
    job = submit(slurm, "--job-name=hello", f"--output={tmp_path}/%j.out", "--wrap",
                 "echo nice=$(nice) partition=$SLURM_JOB_PARTITION; sleep 2", cwd=tmp_path)
    running = wait_job(slurm, job, {"RUNNING", "COMPLETED"})
    queued = slurm.run("squeue", "-h", "-o", "%i %j %T").stdout.split("\n")
    assert running["JobState"] == "COMPLETED" or f"{job} hello RUNNING" in queued, queued
    assert wait_job(slurm, job)["JobState"] == "COMPLETED"
    out = (tmp_path / f"{job}.out").read_text()
    assert f"partition={slurm_cluster.PARTITION}" in out
    assert int(out.split("nice=")[1].split()[0]) >= 10, out   # the node runs its jobs niced
    assert any(j["JobId"] == str(job) and j["JobState"] == "COMPLETED" for j in completed_jobs(slurm))


def test_stop_cancels_running_jobs_and_leaves_no_process(tmp_path, tmp_path_factory):
    """The fixture's teardown, on a cluster of its own: a job still running when a test ends dies with the cluster."""
    require_slurm()
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("stop"))  # short: its job sockets live in it
    try:
        cluster.start()
        job = submit(cluster, f"--output={tmp_path}/%j.out", "--wrap", "sleep 300", cwd=tmp_path)
        wait_job(cluster, job, {"RUNNING"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not cluster.job_pids():
            time.sleep(0.2)
        job_pids = cluster.job_pids()
        assert job_pids, "the job's processes carry SLURM_CONF"
        daemons = [cluster._pid(d) for d in slurm_cluster.DAEMONS]
    finally:
        cluster.stop()
    assert cluster.status() == dict.fromkeys(slurm_cluster.DAEMONS, False)
    alive = [pid for pid in [*job_pids, *daemons] if running(pid)]
    assert not alive, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in alive]
    assert not cluster.job_pids()
    assert "JobState=CANCELLED" in cluster.jobcomp_log.read_text()
    assert cluster.run("scontrol", "ping", check=False).stdout.count("DOWN")
