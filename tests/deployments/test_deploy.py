"""Deployments for real: a `prefect server` on loopback, the process work pool, `prefect deploy`
from deployments/prefect.yaml, a worker, a deployment run of the fetch stage that completes, and the
scheduled `weekly` campaign run twice: two rounds with different candidates."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import datetime, timedelta

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
def test_deploy_worker_runs_the_fetch_deployment_and_two_weekly_rounds(server, tmp_path, tiny_csv, trained_metals):
    def weekly_twice(env: dict, by_name: dict, worker_log) -> None:
        run_weekly_twice(server, env, by_name, worker_log, tmp_path, trained_metals)

    run_fetch_deployment(server, tmp_path, tiny_csv, then=weekly_twice)


def run_weekly_twice(server, env: dict, by_name: dict, worker_log, tmp_path, trained_metals) -> None:
    """The scheduled deployment's parameters ask for the next round: two runs through the worker make rounds 1 and 2,
    with other seeds and other candidates (the EMT metal campaign with its trained model, up to generate)."""
    from flows.cli import _params, build_parser
    from tests.flows.helpers import metal_campaign_args
    from unimat_core.run_layout import RunLayout

    deployed = yaml.safe_load(PREFECT_FILE.read_text())["deployments"]
    assert next(d for d in deployed if d["name"] == "weekly")["parameters"]["params"]["rounds"]["round"] == "next"
    root = tmp_path / "weekly-runs"
    shutil.copytree(trained_metals["campaign_dir"], root / "metals")
    args = metal_campaign_args(root, trained_metals["csv"], trained_metals["hull"], "--round", "next",
                               "--stop-after", "generate")
    params = _params(build_parser().parse_args(args))["params"].model_dump(mode="json")
    ids = []
    for _ in range(2):  # queued at once: the deployment's concurrency limit runs them one after the other
        triggered = run_cli(["deployment", "run", "discovery-campaign/weekly", "--params",
                             json.dumps({"params": params})], env)
        ids.append(re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1))
    runs = [wait_flow_run(server, i, timeout=300, logs=(worker_log, server.log)) for i in ids]
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"], tail(worker_log)
    assert {r["deployment_id"] for r in runs} == {by_name["weekly"]["id"]}
    layout = RunLayout(root.resolve(), "metals")
    assert layout.rounds() == [1, 2]
    plans = [json.loads(layout.for_round(n).round_plan.read_text()) for n in (1, 2)]
    assert plans[0]["seed"] != plans[1]["seed"]
    samples = [set(read_structures_parts(layout.for_round(n).generated)) for n in (1, 2)]
    assert samples[0] and samples[1] and not samples[0] & samples[1]


def read_structures_parts(folder) -> list[str]:
    import pandas as pd

    return pd.read_parquet(folder)["structure"].dropna().tolist()


def assert_schedule_makes_runs(server, deployment_id: str, timeout: float = 90) -> None:
    """The server's scheduler turns the weekly cron schedule into scheduled runs, each a Monday 03:00 UTC. A stored
    schedule is not enough: with SQLAlchemy 2.1 Prefect 3.8 stores it and silently never schedules a run
    (constraints.txt pins 2.0)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = server.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}},
                                                  "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}
                           ).raise_for_status().json()
        if runs or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert runs, f"no run scheduled for the weekly deployment after {timeout:.0f} s:\n{tail(server.log)}"
    starts = [datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs]
    assert all((t.weekday(), t.hour, t.minute, t.utcoffset()) == (0, 3, 0, timedelta(0)) for t in starts), starts


def run_fetch_deployment(server, tmp_path, tiny_csv, then=None) -> dict:
    """deployments/README.md's commands against `server`: work pool, `prefect deploy --all`, a worker, a deployment
    run of the fetch stage that completes and writes its table. Returns the flow run (as the API shows it).
    `then(env, deployments by name, worker log)` runs more against the same worker before it stops."""
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
        assert_schedule_makes_runs(server, by_name["weekly"]["id"])
        lap("schedule")

        params = {"run": {"campaign": "deployed", "results_root": str(results_root)},
                  "source": {"kind": "csv", "name": "tiny", "csv_paths": [str(tiny_csv)]}}
        triggered = run_cli(["deployment", "run", "fetch/fetch", "--params", json.dumps(params)], env)
        flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1)
        lap("trigger")
        run = wait_flow_run(server, flow_run_id, timeout=240, logs=(worker_log, server.log))
        lap("flow run")
        if then is not None:
            then(env, by_name, worker_log)
            lap("more runs")
    finally:
        stop(worker)
    assert run["state"]["type"] == "COMPLETED", tail(worker_log)
    assert run["deployment_id"] == by_name["fetch"]["id"]

    table = read_structures(results_root / "deployed" / "fetch" / "structures.parquet")
    assert len(table) == 6 and (results_root / "deployed" / "fetch" / "rejected.parquet").exists()
    lap("stop")
    print("phases (s):", phases)  # budget: < 2 min in total on an idle 2-core machine (not asserted: shared CI load)
    return run
