"""dask_jobqueue configs render real SLURM/PBS job scripts offline (nothing is submitted, no slurm here)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from deployments.cluster import ClusterConfig, JobQueueConfig, LocalDaskConfig, dask_task_runner, job_script

SLURM = JobQueueConfig(kind="slurm", queue="cpu", account="matsci", cores=8, processes=4, memory="32GB",
                       walltime="02:00:00", prologue=("module load python", "source /proj/unimat/.venv/bin/activate"),
                       extra_directives=("--constraint=cpu",), local_directory="/tmp/dask", maximum_jobs=3)


def test_slurm_job_script_has_the_allocation_and_worker_command():
    script = job_script(SLURM)
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -J unimat-dask", "#SBATCH -p cpu", "#SBATCH -A matsci", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH -t 02:00:00", "#SBATCH --constraint=cpu",
                 "module load python", "source /proj/unimat/.venv/bin/activate", "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"):
        assert line in script, (line, script)
    assert "#SBATCH --mem=30G" in script  # dask_jobqueue writes 32 GB as 29.80 GiB, rounded to 30G
    worker = script.strip().splitlines()[-1]
    assert "distributed.cli.dask_worker tcp://127.0.0.1:" in worker
    assert "--nworkers 4" in worker and "--nthreads 2" in worker and "--local-directory /tmp/dask" in worker


def test_pbs_job_script_and_adaptive_scaling():
    pbs = JobQueueConfig(kind="pbs", queue="workq", account="matsci", cores=4, memory="16GB", walltime="01:00:00")
    script = job_script(pbs)
    for line in ("#PBS -N unimat-dask", "#PBS -q workq", "#PBS -A matsci", "#PBS -l select=1:ncpus=4:mem=15GB",
                 "#PBS -l walltime=01:00:00"):
        assert line in script, (line, script)
    assert "--nworkers 4" in script and "--nthreads 1" in script
    runner = dask_task_runner(SLURM)
    assert runner.cluster_class.__name__ == "SLURMCluster" if not isinstance(runner.cluster_class, str) \
        else runner.cluster_class == "dask_jobqueue.SLURMCluster"
    assert runner.adapt_kwargs == {"minimum": 0, "maximum": 12}  # 3 jobs x 4 worker processes
    assert runner.cluster_kwargs["cores"] == 8 and runner.cluster_kwargs["processes"] == 4


def test_configs_round_trip_and_reject_bad_values():
    adapter = TypeAdapter(ClusterConfig)
    assert adapter.validate_python(SLURM.as_dict()) == SLURM
    assert adapter.validate_python({"kind": "local", "n_workers": 4}) == LocalDaskConfig(n_workers=4)
    with pytest.raises(ValidationError):
        JobQueueConfig(walltime="2h")
    with pytest.raises(ValidationError):
        JobQueueConfig(kind="lsf")
    with pytest.raises(ValueError, match="maximum_jobs"):
        JobQueueConfig(minimum_jobs=5, maximum_jobs=2).adapt_kwargs()
