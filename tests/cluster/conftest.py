"""The cluster for real: a one-node SLURM cluster (tools/slurm_cluster.py) and a Prefect server on a private
PostgreSQL (tools/pg_server.py), each started once per test session and stopped at its end, failures included.

They need Debian's `slurm-wlm`, `munge` and `postgresql` (system-packages.txt, installed by `make setup`) and
root (slurmd starts jobs as their owner; PostgreSQL then runs as the `postgres` user). Where they are missing
the tests are skipped with the reason, except in CI (`CI` set): there the setup step has installed them, so
their absence is a broken setup and fails the tests instead of hiding them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.deployments.server import PrefectServer, prefect_server

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    """A module of tools/ (plain scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


slurm_cluster = load_tool("slurm_cluster")
pg_server = load_tool("pg_server")


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it with `make setup`: the setup step is broken)", pytrace=False)
    pytest.skip(reason)


def require_slurm() -> None:
    if slurm_cluster.missing_programs():
        unavailable(f"Debian packages {slurm_cluster.missing_programs()} missing: run tools/install-system-deps.sh")
    if os.geteuid() != 0:
        unavailable("a SLURM test cluster needs root (slurmd starts the jobs)")


def require_postgres() -> None:
    if pg_server.bin_dir() is None:
        unavailable("Debian package postgresql missing: run tools/install-system-deps.sh")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node cluster (`SLURM_CONF` in `slurm.env()`); every job cancelled and daemon stopped at the end."""
    require_slurm()
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start(nice=10)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL on a free loopback port with its own data folder, deleted at the end. The folder sits directly
    in the temp dir, not under pytest's (mode 700, root's), so that the `postgres` user can reach it."""
    require_postgres()
    server = pg_server.PostgresServer(Path(tempfile.mkdtemp(prefix="unimat-pg-")))
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_prefect(postgres, tmp_path_factory) -> PrefectServer:
    """A real `prefect server` on that PostgreSQL (the database settings, password included, only in its environment)."""
    with prefect_server(tmp_path_factory.mktemp("prefect-pg"), **postgres.prefect_env()) as running:
        yield running
