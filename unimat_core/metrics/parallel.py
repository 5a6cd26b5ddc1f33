"""One process pool for the slow per-structure work (CrystalNN, StructureMatcher).

Workers are spawned (not forked: the caller may hold threads, e.g. Prefect's or torch's, that
fork would copy in a locked state) and each pays the pymatgen/matminer import once, 5-15 s on
a busy 2-core box. So one pool serves a whole evaluation, it is only started when a job is
big enough to pay for it, and small jobs run in-process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux, ask the kernel to SIGTERM this worker when its parent dies.

    Without it a killed evaluation (Ctrl-C on a stuck run, a SIGKILLed Prefect task) leaves its workers
    fingerprinting for minutes as orphans, stealing the cores from whatever runs next."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    import os

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # no glibc (e.g. musl): orphans finish their current chunk, as before
        return
    if os.getppid() != parent_pid:  # the parent died while this worker was still importing
        os._exit(1)


# Smallest job (in items) worth sending to worker processes, per kind of work.
MIN_PARALLEL = {"check": 2000, "fingerprint": 48, "match": 64}


class WorkerPool:
    """`map` in up to `n_workers` processes, started lazily on the first job big enough."""

    def __init__(self, n_workers: int = 1) -> None:
        self.n_workers = max(1, int(n_workers))
        self._executor: Executor | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, kind: str, n_items: int | None = None) -> list[R]:
        """`[fn(x) for x in items]` keeping order; in the pool when `n_items` (default len) is large enough."""
        n_items = len(items) if n_items is None else n_items
        if self.n_workers <= 1 or len(items) < 2 or n_items < MIN_PARALLEL[kind]:
            return [fn(x) for x in items]
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.n_workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=die_with_parent, initargs=(os.getpid(),))
        return list(self._executor.map(fn, items))


def as_pool(workers: int | WorkerPool) -> tuple[WorkerPool, bool]:
    """(pool, owned): a caller's pool is reused; an int makes a pool the callee must close."""
    return (workers, False) if isinstance(workers, WorkerPool) else (WorkerPool(workers), True)


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def chunk_size(n_items: int, n_workers: int, *, per_worker: int = 8, cap: int = 200) -> int:
    """Chunks small enough to balance load, large enough to amortise pickling."""
    return max(1, min(cap, math.ceil(n_items / max(1, n_workers * per_worker))))
