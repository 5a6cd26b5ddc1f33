"""The metrics worker pool: order-preserving map, and no orphaned workers when the caller is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unimat_core.metrics.parallel import WorkerPool

ROOT = Path(__file__).resolve().parents[3]

CALLER = """
import os, sys, time
from unimat_core.metrics.parallel import WorkerPool
pool = WorkerPool(2)
pool.map(time.sleep, [600.0] * 100, kind="fingerprint")  # a long job, in two spawned workers
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_map_keeps_order_in_process_and_in_the_pool():
    with WorkerPool(2) as pool:
        assert pool.map(abs, list(range(-60, 0)), kind="fingerprint") == list(range(60, 0, -1))
    assert WorkerPool(1).map(abs, [-1, -2], kind="fingerprint") == [1, 2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_exit_when_the_caller_is_killed():
    caller = subprocess.Popen([sys.executable, "-c", CALLER], cwd=ROOT)
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and len(workers) < 2:  # the resource tracker is a child too
            workers = [p for p in _children(caller.pid) if "multiprocessing-fork" in
                       Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            time.sleep(0.5)
        assert len(workers) == 2, "the pool did not start its workers"
        time.sleep(3)  # let the workers finish importing and run their initializer
        caller.send_signal(signal.SIGKILL)
        caller.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "orphaned metric workers kept running"
    finally:
        if caller.poll() is None:
            caller.kill()
