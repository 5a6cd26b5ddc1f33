"""Deployments for real: a `prefect server` on loopback, the process work pool, `prefect deploy`
from deployments/prefect.yaml, a worker, and a deployment run of the fetch stage that completes."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.deployments.server import PREFECT, REPO, run_cli, start, stop, tail, wait_flow_run
from tests.conftest import perov5_test_csv
from unimat_core.run_layout import STAGES
from unimat_core.structure_table import read_structures

PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
POOL = "unimat-local"


@pytest.fixture
def tiny_csv(tmp_path):
    """Six perov_5 test crystals as a CDVAE-format CSV."""
    return perov5_test_csv(tmp_path / "tiny.csv", 6)


def test_fastapi_is_below_0_145():
    """Prefect 3.8's server fails to start with fastapi >= 0.145; constraints.txt pins 0.144."""
    from importlib.metadata import version

    assert tuple(int(x) for x in version("fastapi").split(".")[:2]) < (0, 145), version("fastapi")


def test_prefect_yaml_is_well_formed():
    """Every deployment runs from the project dir on the process pool, and entry points resolve to flows."""
    config = yaml.safe_load(PREFECT_FILE.read_text())
    assert [list(step) for step in config["pull"]] == [["prefect.deployments.steps.set_working_directory"]]
    assert config["push"] is None
    names = {d["name"]: d for d in config["deployments"]}
    assert set(names) == {"weekly", *STAGES, "relax-dask", "generate-dask"}
    assert names["weekly"]["entrypoint"] == "flows/campaign.py:discovery_campaign"
    assert names["weekly"]["schedules"][0]["cron"] == "0 3 * * 1"
    import importlib

    for deployment in config["deployments"]:
        assert deployment["work_pool"]["name"] == POOL
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert hasattr(getattr(module, func), "deploy"), f"{deployment['entrypoint']} is not a Prefect flow"


@pytest.mark.slow
def test_deploy_worker_runs_the_fetch_deployment(server, tmp_path, tiny_csv):
    run_fetch_deployment(server, tmp_path, tiny_csv)


def run_fetch_deployment(server, tmp_path, tiny_csv) -> dict:
    """deployments/README.md's commands against `server`: work pool, `prefect deploy --all`, a worker, a deployment
    run of the fetch stage that completes and writes its table. Returns the flow run (as the API shows it)."""
    phases: dict[str, float] = {}
    clock = time.monotonic()  # the server (conftest.py) is already up

    def lap(name: str) -> None:
        nonlocal clock
        phases[name], clock = round(time.monotonic() - clock, 1), time.monotonic()

    results_root = tmp_path / "runs"
    env = server.client_env(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5")
    run_cli(["work-pool", "create", POOL, "--type", "process"], env)
    # the worker starts (imports) while `prefect deploy` loads the flows: both take a while on 2 cores
    worker_log = tmp_path / "worker.log"
    worker = start([PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"], env, worker_log)
    try:
        deployed = run_cli(["--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env, timeout=300)
        lap("deploy")
        deployments = server.post("/deployments/filter").raise_for_status().json()
        by_name = {d["name"]: d for d in deployments}
        assert set(by_name) == {"weekly", *STAGES, "relax-dask", "generate-dask"}, deployed.stdout[-2000:]
        assert by_name["fetch"]["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert by_name["weekly"]["schedules"][0]["schedule"]["cron"] == "0 3 * * 1"

        params = {"run": {"campaign": "deployed", "results_root": str(results_root)},
                  "source": {"kind": "csv", "name": "tiny", "csv_paths": [str(tiny_csv)]}}
        triggered = run_cli(["deployment", "run", "fetch/fetch", "--params", json.dumps(params)], env)
        flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1)
        lap("trigger")
        run = wait_flow_run(server, flow_run_id, timeout=240, logs=(worker_log, server.log))
        lap("flow run")
    finally:
        stop(worker)
    assert run["state"]["type"] == "COMPLETED", tail(worker_log)
    assert run["deployment_id"] == by_name["fetch"]["id"]

    table = read_structures(results_root / "deployed" / "fetch" / "structures.parquet")
    assert len(table) == 6 and (results_root / "deployed" / "fetch" / "rejected.parquet").exists()
    lap("stop")
    print("phases (s):", phases)  # budget: < 2 min in total on an idle 2-core machine (not asserted: shared CI load)
    return run
