"""The relax stage on a real dask.distributed LocalCluster (2 worker processes on loopback) through
prefect-dask's DaskTaskRunner (deployments/dask_flows.py) gives the same rows as the local (thread) run."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from deployments.cluster import LocalDaskConfig, SchedulerAddressConfig, dask_task_runner
from deployments.dask_flows import relax_on_dask
from dft.batch import read_relaxed
from flows.params import RelaxParams, RunParams
from flows.stages import relax_flow
from tests.flows.helpers import candidates, write_generated
from unimat_core.run_layout import RunLayout

EMT = RelaxParams(calculator="emt", chunk_size=2, max_steps=100, time_limit_s=60)
EXACT = ["id", "formula", "converged", "steps", "error"]
CLOSE = ["energy_per_atom", "max_force"]


def _prepare(root, campaign: str) -> RunLayout:
    """Generate-stage parts: 6 rattled Cu/Au/Ni/... fcc cells, one bcc Fe that EMT cannot do, one failed decode."""
    layout = RunLayout(root, campaign)
    iron = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_generated(layout, [*candidates(6, seed=3), iron], n_invalid=1, per_part=4, prefix="g")
    return layout


def _rows(layout: RunLayout):
    frame = read_relaxed(layout.relaxed)
    return frame[EXACT + CLOSE].sort_values("id").reset_index(drop=True)


def test_local_config_is_loopback_processes_without_dashboard():
    runner = dask_task_runner(LocalDaskConfig(n_workers=3))
    assert runner.cluster_class == "distributed.LocalCluster" or runner.cluster_class.__name__ == "LocalCluster"
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True, "memory_limit": "auto",
                                     "host": "127.0.0.1", "dashboard_address": None}
    assert dask_task_runner(SchedulerAddressConfig(address="tcp://127.0.0.1:8786")).address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError):
        SchedulerAddressConfig(address="127.0.0.1:8786")
    config = LocalDaskConfig(n_workers=2)
    assert LocalDaskConfig.from_dict(config.as_dict()) == config


@pytest.mark.slow
def test_relax_stage_on_a_local_dask_cluster_matches_the_local_run(server, tmp_path, monkeypatch):
    """Against the session's real server (not the ephemeral one): the Dask workers report task states to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", server.api_url)  # inherited by the worker processes
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        _compare_local_and_dask(tmp_path)


def _compare_local_and_dask(tmp_path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    local = _prepare(tmp_path, "local")
    on_dask = _prepare(tmp_path, "dask")
    local_summary = relax_flow(RunParams(campaign="local", results_root=str(tmp_path)), EMT)

    config = LocalDaskConfig(n_workers=2)
    with LocalCluster(**config.cluster_kwargs()) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with get_task_stream(client) as stream:
            dask_summary = relax_on_dask(RunParams(campaign="dask", results_root=str(tmp_path)), EMT,
                                         SchedulerAddressConfig(address=cluster.scheduler_address))
        workers = {record["worker"] for record in stream.data}

    # 7 valid rows in chunks of 2 -> 4 chunk tasks, spread over both worker processes
    assert dask_summary["n_chunks"] == local_summary["n_chunks"] == 4
    assert len(stream.data) >= 4 and len(workers) == 2, workers
    for key in ("n_relaxed", "n_converged", "n_failed"):
        assert dask_summary.get(key) == local_summary.get(key), (key, local_summary, dask_summary)

    a, b = _rows(local), _rows(on_dask)
    assert a["id"].tolist() == b["id"].tolist() == [f"g-{i:05d}" for i in range(7)]  # the failed decode is skipped
    assert a[EXACT].equals(b[EXACT])
    np.testing.assert_allclose(a[CLOSE].to_numpy(float), b[CLOSE].to_numpy(float), rtol=0, atol=1e-6, equal_nan=True)
    iron = a.set_index("id").loc["g-00006"]
    assert not iron["converged"] and iron["error"], "bcc Fe (no EMT parameters) is recorded as a failure"
    assert a.set_index("id").drop(index="g-00006")["converged"].all()
