"""Typed Dask cluster configs and the one function that turns them into a Prefect task runner.

The flows never know where their tasks run: a flow is given `task_runner=dask_task_runner(cfg)`
(or `flow.with_options(task_runner=...)`) and its `.submit()`/`.map()` calls go to a
`dask.distributed.LocalCluster` on one machine or to `dask_jobqueue` batch jobs on a cluster.
The cluster itself is created lazily, when the flow run starts, and closed when it ends. Each config is a
`unimat_core.settings.Config` (its one as_dict/from_dict).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from unimat_core.settings import Config

# dask_jobqueue classes by scheduler name; imported by dotted path so this module loads without it
JOBQUEUE_CLASSES = {"slurm": "dask_jobqueue.SLURMCluster", "pbs": "dask_jobqueue.PBSCluster"}


class LocalDaskConfig(Config):
    """A `dask.distributed.LocalCluster`: worker *processes* (one thread each, torch/BLAS are not
    thread-friendly), scheduler and workers on loopback, no dashboard (nothing listens outside)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["local"] = "local"
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"
    host: str = "127.0.0.1"

    def cluster_class(self) -> str:
        return "distributed.LocalCluster"

    def cluster_kwargs(self) -> dict:
        return {"n_workers": self.n_workers, "threads_per_worker": self.threads_per_worker, "processes": True,
                "memory_limit": self.memory_limit, "host": self.host, "dashboard_address": None}

    def adapt_kwargs(self) -> dict | None:
        return None


class SchedulerAddressConfig(Config):
    """An already running Dask scheduler (`dask scheduler` + `dask worker` started by hand or by a
    batch script, or a LocalCluster shared by several flow runs); the flow only connects to it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["address"] = "address"
    address: str = Field(pattern=r"^(tcp|tls|inproc|ucx)://")


class JobQueueConfig(Config):
    """Dask workers as SLURM or PBS batch jobs (`dask_jobqueue`); the scheduler runs inside the flow
    run's process, so that process must run on a node the compute nodes can reach (a login node or
    the first node of an allocation, see deployments/slurm/run_campaign.sbatch).

    One job = `cores` cores split into `processes` single-threaded worker processes; the cluster
    adapts between `minimum_jobs` and `maximum_jobs` jobs as tasks queue up.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["slurm", "pbs"] = "slurm"
    queue: str | None = None             # SLURM partition / PBS queue
    account: str | None = None           # SLURM --account / PBS -A
    cores: int = Field(default=8, ge=1)
    processes: int | None = Field(default=None, ge=1)   # default: one worker process per core
    memory: str = "32GB"
    walltime: str = Field(default="04:00:00", pattern=r"^\d+:\d{2}:\d{2}$")
    job_name: str = "unimat-dask"
    prologue: tuple[str, ...] = ()        # shell lines run before the worker starts (modules, venv activation)
    extra_directives: tuple[str, ...] = ()   # e.g. "--gres=gpu:1", "--constraint=cpu", "-l select=1:ncpus=8"
    interface: str | None = None          # network interface of the workers and scheduler (e.g. "ib0")
    scheduler_host: str | None = None     # address the scheduler binds to (default: the interface's / dask's choice)
    local_directory: str | None = None    # node-local scratch for worker spill files
    log_directory: str | None = None      # batch job stdout/stderr
    python: str | None = None             # interpreter on the compute nodes (default: this one)
    minimum_jobs: int = Field(default=0, ge=0)
    maximum_jobs: int = Field(default=4, ge=1)

    def cluster_class(self) -> str:
        return JOBQUEUE_CLASSES[self.kind]

    def cluster_kwargs(self) -> dict:
        processes = self.processes or self.cores
        # dask gives each worker cores/processes task threads; BLAS/torch inside a task get one thread,
        # so a job never runs more threads than it has cores
        kwargs: dict = {
            "queue": self.queue, "account": self.account, "cores": self.cores,
            "processes": processes, "memory": self.memory, "walltime": self.walltime, "job_name": self.job_name,
            "job_script_prologue": [*self.prologue, "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"],
            "job_extra_directives": list(self.extra_directives), "interface": self.interface,
            "local_directory": self.local_directory, "log_directory": self.log_directory,
        }
        if self.python:
            kwargs["python"] = self.python
        if self.scheduler_host:
            kwargs["scheduler_options"] = {"host": self.scheduler_host, "dashboard": False}
        return {k: v for k, v in kwargs.items() if v is not None}

    def adapt_kwargs(self) -> dict | None:
        if self.maximum_jobs < self.minimum_jobs:
            raise ValueError(f"maximum_jobs ({self.maximum_jobs}) < minimum_jobs ({self.minimum_jobs})")
        # adapt() counts workers, not jobs
        per_job = self.processes or self.cores
        return {"minimum": self.minimum_jobs * per_job, "maximum": self.maximum_jobs * per_job}


ClusterConfig = Annotated[LocalDaskConfig | SchedulerAddressConfig | JobQueueConfig, Field(discriminator="kind")]


def dask_task_runner(config: LocalDaskConfig | SchedulerAddressConfig | JobQueueConfig):
    """A `prefect_dask.DaskTaskRunner` that starts the configured cluster when the flow run starts
    (and closes it at the end), or connects to a running scheduler."""
    from prefect_dask import DaskTaskRunner

    if isinstance(config, SchedulerAddressConfig):
        return DaskTaskRunner(address=config.address)
    return DaskTaskRunner(cluster_class=config.cluster_class(), cluster_kwargs=config.cluster_kwargs(),
                          adapt_kwargs=config.adapt_kwargs())


def job_script(config: JobQueueConfig) -> str:
    """The batch script dask_jobqueue would submit for one worker job, built offline (nothing is submitted;
    creating the cluster object starts only a local scheduler, which is closed again)."""
    import importlib

    module, name = config.cluster_class().rsplit(".", 1)
    cluster_cls = getattr(importlib.import_module(module), name)
    kwargs = config.cluster_kwargs()
    kwargs["scheduler_options"] = {"host": "127.0.0.1", "dashboard": False}  # only the script is wanted
    with cluster_cls(**kwargs) as cluster:
        return cluster.job_script()
