"""Inputs of the evaluate stage: which fetched split is the reference and which one the model trained on.

The metrics compare generated structures with the held-out split (test, else val) and measure
novelty against the split the model was trained on; both are rows of `fetch/structures.parquet`,
so the evaluation task gets one path and two split names.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from tasks.train import training_split_of
from unimat_core.metrics.cdvae_constants import COV_CUTOFFS
from unimat_core.metrics.evaluate import dataset_key
from unimat_core.run_layout import RunLayout


def reference_split(splits: set[str], training: str | None) -> str | None:
    """test if present, else val (unless trained on it and there is another split), else None (= every row)."""
    for name in ("test", "val"):
        if name in splits and (name != training or len(splits) == 1):
            return name
    return None


def dataset_name(layout: RunLayout) -> str | None:
    """perov_5 / carbon_24 / mp_20 from the fetch stage's source marker (picks the coverage cutoffs), else None."""
    marker = layout.stage_dir("fetch") / "source.json"
    name = json.loads(marker.read_text()).get("name") if marker.exists() else None
    return name if name and dataset_key(name) in COV_CUTOFFS else None


@task(name="evaluate-inputs")
def evaluate_inputs(layout: RunLayout) -> dict:
    """Paths and split names for `tasks.evaluate.evaluate_generated` (fails fast on missing stages)."""
    structures = layout.require(layout.structures, made_by="fetch")
    layout.require_parts(layout.generated, made_by="generate")
    splits = set(pq.read_table(structures, columns=["split"]).column("split").to_pylist())
    training = training_split_of(layout)
    training = training if training in splits else None
    reference = reference_split(splits, training)
    get_run_logger().info("evaluate: reference split %s, training split %s", reference or "all", training or "all")
    return {"generated_dir": str(layout.generated), "structures": str(structures), "reference_split": reference,
            "training_split": training, "dataset": dataset_name(layout)}


@task(name="csp-inputs")
def csp_inputs(layout: RunLayout) -> dict:
    """The trained checkpoint and the held-out split whose crystals CSP predicts (fails fast on missing stages)."""
    structures = layout.require(layout.structures, made_by="fetch")
    checkpoint = layout.require(layout.train_checkpoint, made_by="train")
    splits = set(pq.read_table(structures, columns=["split"]).column("split").to_pylist())
    training = training_split_of(layout)
    reference = reference_split(splits, training if training in splits else None)
    get_run_logger().info("csp: reference split %s, model %s", reference or "all", checkpoint)
    return {"checkpoint": str(checkpoint), "structures": str(structures), "reference_split": reference,
            "dataset": dataset_name(layout)}
