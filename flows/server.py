"""A temporary Prefect server owned by one `unimat` command, which dies with it even on `kill -9`.

Prefect's own temporary server is a child process that outlives a killed parent (about 230 MB each).
This one is the same server (Prefect's API app under uvicorn, on loopback, on the database under
PREFECT_HOME), started by us with the Linux parent-death signal set, so the kernel stops it when the
command's process dies for any reason. It is not used when PREFECT_API_URL points at a server already.
Elsewhere than Linux it falls back to Prefect's own temporary server.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def prefect_environment(home: str | Path) -> None:
    """Defaults every `unimat` command and benchmark runs Prefect with (the user's own settings win): the
    database and settings under `home`, time for a first start's migrations on a busy machine, and no usage
    heartbeat (offline by design: it cannot reach its host, logs an ERROR per run and races the SQLite writer)."""
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with(parent: int) -> Callable[[], None]:
    """Run in the child before exec: ask the kernel for SIGTERM when the parent dies, and leave at once if
    it died already (between fork and this call)."""
    def set_signal() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
    return set_signal


def _server_command(port: int) -> list[str]:
    """Prefect's temporary-server command line (prefect.server.api.server.SubprocessASGIServer)."""
    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


def wait_healthy(api_url: str, server: subprocess.Popen, timeout_s: float) -> None:
    """Return once the server at `api_url` answers its health check; raise if it exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {server.returncode} while starting")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Prefect server did not answer within {timeout_s:g} s (raise "
                               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine)")
        time.sleep(0.2)


@contextmanager
def command_server(timeout_s: float | None = None) -> Iterator[str | None]:
    """Start the server and point this process's Prefect client at it (PREFECT_API_URL) for the block.

    Yields the API URL, or None (Prefect then starts its own temporary server) when a server is configured
    already, this is not Linux, or Prefect was imported before: its settings are read from the environment
    at import."""
    if os.environ.get("PREFECT_API_URL") or not sys.platform.startswith("linux") or "prefect" in sys.modules:
        yield None  # a configured server, or settings already read at import: Prefect's own temporary server
        return
    timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    server = subprocess.Popen(_server_command(port), env=env, preexec_fn=_die_with(os.getpid()))
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, server, timeout_s)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _drain_prefect_queues()
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _drain_prefect_queues() -> None:
    """Send the logs and events Prefect still queues before the server goes (else they fail at exit)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)
