"""A Prefect server on a real PostgreSQL (tools/pg_server.py), driven with deployments/README.md's commands:
work pool, `prefect deploy --all`, a worker, a deployment run that completes and is visible through the API."""

from __future__ import annotations

import pytest

from tests.cluster.leaks import api_leaks, file_leaks
from tests.conftest import perov5_test_csv
from tests.deployments.test_deploy import run_fetch_deployment


@pytest.mark.slow
def test_a_deployment_runs_end_to_end_on_the_postgresql_server(pg_prefect, postgres, tmp_path):
    run = run_fetch_deployment(pg_prefect, tmp_path, perov5_test_csv(tmp_path / "tiny.csv", 6))

    # the runs live in PostgreSQL: the flow run is a row of its flow_run table, and the server made no SQLite file
    assert postgres.query(f"select state_type from flow_run where id = '{run['id']}'") == "COMPLETED"
    assert int(postgres.query("select count(*) from deployment")) >= 9
    assert not [p for p in pg_prefect.home.rglob("*.db")], "the server fell back to SQLite"
    # and are visible through the API: the deployment's runs, the run's logs
    runs = pg_prefect.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [run["deployment_id"]]}}})
    assert [r["id"] for r in runs.raise_for_status().json()] == [run["id"]]
    logs = pg_prefect.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}}).raise_for_status().json()
    assert any("deployment steps completed" in entry["message"] for entry in logs), [e["message"] for e in logs][-5:]

    # the database password is only in the server's environment: not given to clients, not in any log or output
    assert not any("DATABASE" in key for key in pg_prefect.client_env())
    leaks = file_leaks([postgres.password], tmp_path, pg_prefect.log, postgres.log) + api_leaks([postgres.password], pg_prefect)
    assert not leaks, leaks
