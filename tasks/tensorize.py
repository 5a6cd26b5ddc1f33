"""Tensorize stage: structure table -> UniMat tensor shards (reused when inputs and spec are unchanged)."""

from __future__ import annotations

from prefect import get_run_logger, task

from unimat_core.run_layout import RunLayout
from unimat_core.tensor_store import tensorize_file


@task(name="tensorize")
def tensorize_structures(layout: RunLayout, max_atoms_per_element: int | None = None, shard_size: int = 4096,
                         crop_grid: bool = False) -> dict:
    logger = get_run_logger()
    structures = layout.require(layout.structures, made_by="fetch")
    summary = tensorize_file(structures, layout.tensors, shard_size=shard_size, crop_grid=crop_grid,
                             max_atoms_per_element=max_atoms_per_element)
    logger.info("tensorize: %s", summary.as_dict())
    return summary.as_dict()
