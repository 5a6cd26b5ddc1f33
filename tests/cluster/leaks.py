"""Where a planted secret could surface: files (text and binary, parquet cell by cell), job scripts, the Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def file_leaks(secrets: list[str], *roots: Path) -> list[str]:
    """Files under `roots` that hold a secret: in their bytes, or (parquet, compressed) in any cell."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            hits = [s for s in secrets if s.encode() in data]
            if not hits and path.suffix == ".parquet":
                text = pd.read_parquet(path).astype(str).to_csv()
                hits = [s for s in secrets if s in text]
            found += [f"{path}: {s[:4]}..." for s in hits]
    return found


def api_leaks(secrets: list[str], server) -> list[str]:
    """Flow runs (parameters), task runs, logs and artifacts of the server that hold a secret."""
    found = []
    for kind in ("flow_runs", "task_runs", "logs", "artifacts", "deployments", "variables"):
        offset = 0
        while True:
            page = server.post(f"/{kind}/filter", {"limit": 200, "offset": offset}).raise_for_status().json()
            text = json.dumps(page)
            found += [f"{kind}: {s[:4]}..." for s in secrets if s in text]
            if len(page) < 200:
                break
            offset += 200
    return found


def job_script_leaks(secrets: list[str], cluster, job_ids) -> list[str]:
    """The batch scripts SLURM stored for these jobs (`scontrol write batch_script`)."""
    found = []
    for job in job_ids:
        script = cluster.run("scontrol", "write", "batch_script", str(job), "-", check=False).stdout
        assert script.startswith("#!"), f"no batch script for job {job}"
        found += [f"job {job} script: {s[:4]}..." for s in secrets if s in script]
    return found
