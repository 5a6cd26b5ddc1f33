"""Start and stop real Prefect processes (server, worker) for tests, each in its own process group.

Everything runs on loopback with its own PREFECT_HOME (SQLite), so a test never touches the
developer's server or another test's database; `stop` kills the whole group even on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from flows.server import wait_healthy as server_healthy

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with its own PREFECT_HOME and (for clients) PREFECT_API_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", OMP_NUM_THREADS="1",
               PREFECT_CLI_COLORS="false", PYTHONUNBUFFERED="1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    """A long-running process in a new session (its own process group), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left (flow-run children included)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:  # the leader may be gone while children of the group live on
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=timeout)


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} not written)"


@dataclass(frozen=True)
class PrefectServer:
    url: str          # http://127.0.0.1:PORT (the UI)
    api_url: str      # http://127.0.0.1:PORT/api
    home: Path        # the server's PREFECT_HOME (SQLite database inside)
    log: Path

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for CLI commands, workers and flow runs that talk to this server."""
        return prefect_env(self.home / "client", self.api_url, **extra)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", timeout=10)

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.api_url}{path}", json=body or {}, timeout=10)


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """flows.server's health wait, with the server's log in the error."""
    try:
        server_healthy(api_url, proc, timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise type(exc)(f"{exc}:\n{tail(log)}") from exc


@contextmanager
def prefect_server(root: Path, timeout: float = 180, **database: str) -> Iterator[PrefectServer]:
    """`prefect server start` on a free loopback port with SQLite under `root`, or on the database that the
    PREFECT_SERVER_DATABASE_* settings in `database` name (tests/cluster: PostgreSQL); stopped on exit."""
    home = root / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "server.log"
    # the UI is served by the same process; background services we do not need are off to save CPU
    env = prefect_env(home, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
                      PREFECT_SERVER_UI_API_URL=f"http://127.0.0.1:{port}/api",  # the UI's JS calls this, not :4200
                      PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
                      PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false", PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
                      PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
                      PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",  # schedules become runs within seconds
                      **database)
    proc = start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        server = PrefectServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api", home, log)
        wait_healthy(server.api_url, proc, log, timeout)
        yield server
    finally:
        stop(proc)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """A short `prefect ...` command; raises with its output if it fails."""
    proc = subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_flow_run(server: PrefectServer, flow_run_id: str, timeout: float, logs: tuple[Path, ...] = ()) -> dict:
    """Poll the REST API until the flow run reaches a final state; return the flow run."""
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        run = server.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
        if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    state = run.get("state") or {}
    raise TimeoutError(f"flow run {flow_run_id} still {state.get('type')} after {timeout:.0f} s:\n"
                       + "\n".join(f"--- {p.name}\n{tail(p)}" for p in logs))
