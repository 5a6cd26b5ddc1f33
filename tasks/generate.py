"""Generate stage: one task per batch, each writing its own parquet part as soon as it finishes."""

from __future__ import annotations

import threading
from uuid import UUID

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from unimat_core.model.checkpoint import LoadedModel, load_model
from unimat_core.model.pretrained import checkpoint_file
from unimat_core.model.device import cpu_budget, pick_device
from unimat_core.model.config import GenerateConfig
from unimat_core.model.generation import generate_part, part_path, plan_batches
from unimat_core.parts import set_aside_if_damaged

_MODELS: dict[tuple[str, float, bool], LoadedModel] = {}
_LANES: dict[int, threading.BoundedSemaphore] = {}
_LOCK = threading.Lock()


def cached_model(config: GenerateConfig) -> LoadedModel:
    """One loaded model per worker process and checkpoint version (tasks of one flow share it)."""
    path = checkpoint_file(config.checkpoint)
    key = (str(path), path.stat().st_mtime, config.use_ema)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(path, pick_device(config.device, config.cpu_threads), use_ema=config.use_ema)
        return _MODELS[key]


def sampling_lane(config: GenerateConfig, loaded: LoadedModel) -> threading.BoundedSemaphore:
    """The batch tasks of a flow run in threads; at most one per core of the thread budget samples at once, on
    one torch thread each (the throughput `unimat_core.model.lanes` measures), one at a time on a GPU. The number
    comes from the config's thread budget, not `sampling_lanes` (torch's thread count, which a concurrent batch
    task has already set to one)."""
    on_cpu = loaded.device.type == "cpu"
    lanes = cpu_budget(config.cpu_threads) if on_cpu else 1
    if lanes > 1:
        torch.set_num_threads(1)
    with _LOCK:
        return _LANES.setdefault(lanes, threading.BoundedSemaphore(lanes))


@task(name="plan-generation")
def plan_generation(config: GenerateConfig) -> list[list[str | None]]:
    """Targets per batch (small: formulas or None); validates compositions before any sampling."""
    return plan_batches(config, cached_model(config).spec)


@task(name="generation-progress")
def start_progress(campaign: str, n_batches: int) -> str:
    """A progress artifact the batch tasks move forward as their parts land (returns its id)."""
    return str(create_progress_artifact(progress=0.0, description=f"generation batches of {campaign} ({n_batches})"))


@task(name="generate-batch", retries=1)
def generate_batch(config: GenerateConfig, batch: int, targets: list[str | None], progress_id: str | None = None,
                   n_batches: int | None = None) -> dict:
    damaged = set_aside_if_damaged(part_path(config.out_dir, batch))
    if damaged:  # its seed is fixed by (seed, batch): sampling it again gives the part it should have been
        get_run_logger().warning("%s; sampling batch %d again", damaged, batch)
    loaded = cached_model(config)
    with sampling_lane(config, loaded):
        part = generate_part(config, batch, targets, loaded)
    get_run_logger().info("batch %d: %d structures, %d decoded (%s)", batch, part["n"], part["n_valid"],
                          "reused" if part["skipped"] else "new")
    if progress_id and n_batches:  # parts on disk / planned: right whatever order the batches finish in
        done = sum(part_path(config.out_dir, b).exists() for b in range(n_batches))
        update_progress_artifact(UUID(progress_id), progress=100.0 * done / n_batches)
    return part
