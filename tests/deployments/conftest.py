"""One real `prefect server` per test session for the deployment and UI tests (starting one costs
20-50 s on a busy 2-core machine: database migrations and imports); stopped when the session ends."""

from __future__ import annotations

import pytest

from tests.deployments.server import PrefectServer, prefect_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> PrefectServer:
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as running:
        yield running
