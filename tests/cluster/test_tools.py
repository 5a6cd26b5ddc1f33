"""The two tools as deployments/README.md runs them by hand: `eval "$(python3 tools/... start DIR)"`, then stop."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.cluster.conftest import require_postgres, require_slurm

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def sh(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}"], capture_output=True, text=True, timeout=timeout)


def test_slurm_cluster_script_starts_runs_a_job_and_stops(tmp_path, tmp_path_factory):
    require_slurm()
    root = tmp_path_factory.mktemp("slurm-tool")  # short: slurmd's job sockets live in it
    proc = sh(f'''
        trap 'python3 {TOOLS}/slurm_cluster.py stop {root}' EXIT
        eval "$(python3 {TOOLS}/slurm_cluster.py start {root})"
        python3 {TOOLS}/slurm_cluster.py status {root}
        sbatch --wait --parsable -o {tmp_path}/out --wrap 'echo ran on $SLURMD_NODENAME' >/dev/null
        cat {tmp_path}/out''')
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "munged=up slurmctld=up slurmd=up" in proc.stdout and "ran on unimat-node" in proc.stdout
    status = sh(f"python3 {TOOLS}/slurm_cluster.py status {root} || true").stdout
    assert status.strip() == "munged=down slurmctld=down slurmd=down"


def test_pg_server_script_prints_settings_without_the_password():
    require_postgres()
    root = Path(tempfile.mkdtemp(prefix="unimat-pg-"))  # reachable by the postgres user
    try:
        proc = sh(f'''
            trap 'python3 {TOOLS}/pg_server.py stop {root}' EXIT
            out=$(python3 {TOOLS}/pg_server.py start {root})
            echo "$out"
            eval "$out"
            PGPASSWORD="$PREFECT_SERVER_DATABASE_PASSWORD" psql -XAt -h "$PREFECT_SERVER_DATABASE_HOST" \\
              -p "$PREFECT_SERVER_DATABASE_PORT" -U "$PREFECT_SERVER_DATABASE_USER" -d "$PREFECT_SERVER_DATABASE_NAME" \\
              -c "select 'connected as ' || current_user"''')
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "connected as prefect" in proc.stdout
        password = (root / "password").read_text().strip()
        assert password not in proc.stdout + proc.stderr and "PREFECT_SERVER_DATABASE_PASSWORD=\"$(cat" in proc.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
