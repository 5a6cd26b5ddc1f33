"""Reading a test SLURM cluster's jobs: `scontrol show job` (kept for MinJobAge) and the job completion log."""

from __future__ import annotations

import re
import time

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def job_info(cluster, job_id: int | str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, JobName, NodeList, Command, ...)."""
    out = cluster.run("scontrol", "show", "job", "-o", str(job_id)).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(cluster, job_id: int | str, states=FINAL, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(cluster, job_id)
        if info.get("JobState") in states:
            return info
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s:\n{cluster.logs()}")


def submit(cluster, *args: str, env: dict[str, str] | None = None, cwd=None) -> int:
    """sbatch --parsable ...; the job id."""
    import subprocess

    proc = subprocess.run(["sbatch", "--parsable", *args], env=cluster.env(env), cwd=cwd, capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr}")
    return int(proc.stdout.strip().split(";")[0])


def completed_jobs(cluster) -> list[dict[str, str]]:
    """Every finished job of the cluster, from the job completion log (jobcomp/filetxt)."""
    if not cluster.jobcomp_log.exists():
        return []
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in cluster.jobcomp_log.read_text().splitlines() if line]
