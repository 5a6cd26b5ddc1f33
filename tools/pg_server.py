"""A private PostgreSQL server for a Prefect server: its own data folder, a loopback port, one database.

    python tools/pg_server.py start /tmp/pg      # initdb (first time), pg_ctl start; prints the Prefect settings
    python tools/pg_server.py stop /tmp/pg

`start` makes the role `prefect` with a random password (kept in `<root>/password`, mode 600, never printed)
and the database `prefect`, listening on 127.0.0.1 only (a free port unless --port) with password
authentication (scram-sha-256) and its Unix socket inside the folder. It prints the PREFECT_SERVER_DATABASE_*
settings for `prefect server start` with the password read from that file, so the password stays out of
the shell history and of any connection URL. Started as root, the server runs as the `postgres` user
(PostgreSQL refuses root) and the folder belongs to it; its parent folders must let that user through.

For tests and trials: fsync is off (a crash can lose the database). A group's server is set up by its
administrator (deployments/README.md, "A shared server"). Debian package `postgresql` (system-packages.txt).
Standard library only: the tests load this file (tests/cluster/conftest.py).
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

USER = "prefect"
DATABASE = "prefect"
RUN_AS = "postgres"   # when started by root


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def prefect_env(self) -> dict[str, str]:
        """The settings `prefect server start` needs for this database (the password among them)."""
        return {"PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg", "PREFECT_SERVER_DATABASE_HOST": "127.0.0.1",
                "PREFECT_SERVER_DATABASE_PORT": str(self.port), "PREFECT_SERVER_DATABASE_USER": USER,
                "PREFECT_SERVER_DATABASE_NAME": DATABASE, "PREFECT_SERVER_DATABASE_PASSWORD": self.password}

    def _run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """A PostgreSQL program, as the `postgres` user when this process is root."""
        preexec = None
        if os.geteuid() == 0:
            account = pwd.getpwnam(RUN_AS)

            def preexec():  # noqa: E306 (drop root before exec)
                os.setgid(account.pw_gid)
                os.initgroups(RUN_AS, account.pw_gid)
                os.setuid(account.pw_uid)
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": str(self.root), **(env or {})}
        proc = subprocess.run([str(bin_dir() / cmd[0]), *cmd[1:]], env=full_env, cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=preexec, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.tail()}")
        return proc

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def start(self, port: int | None = None) -> None:
        """initdb on first use, then start the server and create the database; returns when it accepts connections."""
        if bin_dir() is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql): run tools/install-system-deps.sh")
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(RUN_AS)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.root.chmod(0o700)
        if (self.root / "port").exists() and self.running():
            raise RuntimeError(f"a server is already running in {self.root} (port {self.port}): stop it first")
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            pw_file = self.root / "password"
            pw_file.write_text(secrets.token_urlsafe(24) + "\n")
            pw_file.chmod(0o600)
            if os.geteuid() == 0:
                os.chown(pw_file, account.pw_uid, account.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pw_file}", "--auth=scram-sha-256",
                      "-E", "UTF8", "--no-locale")
        (self.root / "port").write_text(str(port or free_port()))
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        if fresh:  # the password goes through the environment, never on a command line
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE,
                      env={"PGPASSWORD": self.password})

    def query(self, sql: str) -> str:
        """One SQL statement through psql as the `prefect` role; the unaligned, tuples-only output."""
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", DATABASE, "-XAtc", sql,
                         env={"PGPASSWORD": self.password}).stdout.strip()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and subprocess.run(
            [str(bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True).returncode == 0

    def stop(self) -> None:
        """pg_ctl stop (fast: open connections are closed); nothing to do if it is not running."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/pg_server.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"], help="env: print the exports again")
    parser.add_argument("root", type=Path, help="folder of the server (created)")
    parser.add_argument("--port", type=int, help="loopback port (default: a free one)")
    args = parser.parse_args(argv)
    server = PostgresServer(args.root.resolve())
    if args.command == "start":
        try:
            server.start(args.port)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.command in ("start", "env"):
        for key, value in server.prefect_env().items():
            shown = f'"$(cat {server.root}/password)"' if key.endswith("PASSWORD") else value
            print(f"export {key}={shown}")
    elif args.command == "stop":
        server.stop()
    else:
        up = server.running()
        print("up" if up else "down")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
