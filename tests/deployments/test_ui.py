"""The Prefect UI for real: a tiny campaign runs against a `prefect server` on loopback, then headless
Debian Chromium loads the UI (a JS app: --dump-dom after a virtual-time budget) and must list the
campaign's flow runs and artifacts; a screenshot of the campaign's flow-run page is saved."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployments.server import REPO
from tests.conftest import perov5_test_csv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CAMPAIGN = "uitest"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian `chromium` is not installed (system-packages.txt; `make setup` installs it)")


def chromium(url: str, profile: Path, *args: str) -> str:
    """Headless Chromium, offline and sandbox-free (root in CI); returns stdout (the DOM with --dump-dom)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
           f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=15000", *args, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:  # chromium forks renderer/zygote helpers: kill the whole group, also on timeout
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def page_text(url: str, profile: Path, expected: list[str], attempts: int = 3) -> str:
    """The page's text once every `expected` string shows; the UI fetches lazily, so a slow (busy)
    server may need another load. Fails with the last text seen."""
    for _ in range(attempts):
        text = visible_text(chromium(url, profile, "--dump-dom"))
        assert "Can't connect to Server API" not in text, text[:2000]
        if all(e in text for e in expected):
            return text
    missing = [e for e in expected if e not in text]
    raise AssertionError(f"{url} does not show {missing}:\n{text[:3000]}")


@pytest.mark.slow
def test_ui_lists_the_campaign_runs_and_artifacts(server, tmp_path):
    perov5_test_csv(tmp_path / "tiny.csv", 24)
    args = ["campaign", "--campaign", CAMPAIGN, "--results-root", str(tmp_path / "runs"), "--source", str(tmp_path / "tiny.csv"),
            "--max-steps", "2", "--batch-size", "8", "--num-samples", "4", "--gen-batch-size", "4", "--steps", "2",
            "--stop-after", "generate"]
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=server.client_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # what the UI must show, from the REST API
    runs = server.post("/flow_runs/filter").raise_for_status().json()
    flows = {f["id"]: f["name"] for f in server.post("/flows/filter").raise_for_status().json()}
    campaign = next(r for r in runs if flows[r["flow_id"]] == "discovery-campaign" and r["parameters"]["params"]["run"]["campaign"] == CAMPAIGN)
    assert campaign["state"]["type"] == "COMPLETED"
    artifacts = server.post("/artifacts/filter", {"artifacts": {"key": {"like_": CAMPAIGN}}}).raise_for_status().json()
    keys = {a["key"] for a in artifacts}
    assert {f"{CAMPAIGN}-fetch", f"{CAMPAIGN}-campaign"} <= keys, keys
    summary = next(a for a in artifacts if a["key"] == f"{CAMPAIGN}-campaign")
    assert summary["flow_run_id"] == campaign["id"]
    stages = [r for r in runs if r["parent_task_run_id"] and r["start_time"] >= campaign["start_time"]]
    assert {"fetch", "tensorize", "train", "generate"} <= {flows[r["flow_id"]] for r in stages}

    # what the UI does show
    profile, out = tmp_path / "chromium-profile", tmp_path / "ui"
    out.mkdir()
    # the runs list: the campaign run and its stage subflows
    page_text(f"{server.url}/runs", profile, [campaign["name"], "discovery-campaign", "fetch", "generate"])
    # the campaign's own page, and the artifacts list with both artifacts and their descriptions
    page_text(f"{server.url}/runs/flow-run/{campaign['id']}", profile, [campaign["name"], "discovery-campaign", "Artifacts"])
    page_text(f"{server.url}/artifacts", profile, [f"{CAMPAIGN}-fetch", "fetch stage summary",
                                                 f"{CAMPAIGN}-campaign", "discovery campaign summary"])
    page_text(f"{server.url}/artifacts/key/{CAMPAIGN}-fetch", profile, [f"{CAMPAIGN}-fetch", "fetch stage summary"])

    shot = out / "campaign-flow-run.png"
    chromium(f"{server.url}/runs/flow-run/{campaign['id']}", profile, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    chromium(f"{server.url}/artifacts", profile, f"--screenshot={out / 'artifacts.png'}")
    (out / "campaign.json").write_text(json.dumps({"flow_run": campaign["name"], "artifacts": sorted(keys)}, indent=1))
    print("UI screenshot:", shot)
