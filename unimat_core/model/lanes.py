"""Sampling lanes: on CPU, several batches sampled at once, each on one torch thread.

The denoiser is small, so its ops split poorly across intra-op threads: on this 2-core machine two batches on
one thread each draw 1.4x the samples per second of one batch on two threads (benchmarks/RESULTS.md,
"Sampling throughput"). Torch ops release the GIL, so plain Python threads give the parallelism; each batch
keeps its own seeded generator, so the samples do not depend on the number of lanes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def sampling_lanes(device: torch.device) -> int:
    """Batches to sample at once: the torch thread budget `pick_device` set on CPU, one on a GPU."""
    return torch.get_num_threads() if device.type == "cpu" else 1


def map_in_lanes(fn: Callable[[Item], Result], items: Iterable[Item], lanes: int) -> Iterator[Result]:
    """`fn` over `items`, results in input order; with `lanes` > 1, that many run at once on one torch thread
    each (the thread budget is restored when the iterator ends)."""
    items = list(items)
    if lanes <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    budget = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=min(lanes, len(items)), thread_name_prefix="sampling-lane")
    try:
        yield from pool.map(fn, items)
    finally:  # a failed batch or a consumer that stops early cancels the batches not started yet
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(budget)
