"""Inputs of the evaluate stage: the fetched reference split and the training split as their own tables.

The metrics compare generated structures with the held-out split (test, else val) and measure
novelty against the split the model was trained on; both are cut out of `fetch/structures.parquet`
into `evaluate/inputs/` so the evaluation task only ever gets paths.
"""

from __future__ import annotations

import json

from prefect import get_run_logger, task

from tasks.train import training_split_of
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures, write_structures


def reference_split(splits: set[str], training: str | None) -> str | None:
    """test if present, else val (unless trained on it), else None (= every structure)."""
    for name in ("test", "val"):
        if name in splits and (name != training or len(splits) == 1):
            return name
    return None


def dataset_name(layout: RunLayout) -> str | None:
    """perov_5 / carbon_24 / mp_20 ... from the fetch stage's source marker (picks the metric cutoffs)."""
    marker = layout.stage_dir("fetch") / "source.json"
    return json.loads(marker.read_text()).get("name") if marker.exists() else None


@task(name="evaluate-inputs")
def split_tables(layout: RunLayout) -> dict:
    """Write `evaluate/inputs/{reference,training}.parquet` (reused when newer than the fetched table)."""
    structures = layout.require(layout.structures, made_by="fetch")
    layout.require_parts(layout.generated, made_by="generate")
    inputs = layout.stage_dir("evaluate") / "inputs"
    reference, training = inputs / "reference.parquet", inputs / "training.parquet"
    training_split = training_split_of(layout)
    fresh = all(p.exists() and p.stat().st_mtime >= structures.stat().st_mtime for p in (reference, training))
    if not fresh:
        table = read_structures(structures)
        splits = set(table["split"])
        ref_split = reference_split(splits, training_split)
        write_structures(table if ref_split is None else table[table["split"] == ref_split], reference)
        write_structures(table if training_split is None else table[table["split"] == training_split], training)
        get_run_logger().info("evaluate inputs: reference split %s, training split %s", ref_split or "all",
                              training_split or "all")
    return {"generated_dir": str(layout.generated), "reference_path": str(reference), "training_path": str(training),
            "dataset": dataset_name(layout), "training_split": training_split}
