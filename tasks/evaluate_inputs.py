"""Inputs of the evaluate stage: which fetched split is the reference, and every known crystal for novelty.

The metrics compare generated structures with the held-out split (test, else val). Novelty is measured
against every known crystal (unimat_core.metrics.known): every split of `fetch/structures.parquet`, the
bundled dataset's other splits when the fetch took only some, and the score stage's reference hull when
it exists. The task gets paths and names only.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from unimat_core.tensor_store import training_split_of
from unimat_core.datasets.bundled import BUNDLED_DATASETS
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
    marker = layout.fetch_source
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
    known, bundled = known_sources(layout, splits)
    get_run_logger().info("evaluate: reference split %s, training split %s; novelty vs %s%s", reference or "all",
                          training or "all", [origin for origin, _ in known],
                          f" + bundled {bundled}" if bundled else "")
    return {"generated_dir": str(layout.generated), "structures": str(structures), "reference_split": reference,
            "training_split": training, "dataset": dataset_name(layout), "known": known, "known_bundled": bundled}


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


def known_sources(layout: RunLayout, fetched_splits: set[str]) -> tuple[list[tuple[str, str]], str | None]:
    """(origin, path) of every known-crystal table, and the bundled dataset to add when the fetch lacks splits."""
    marker = layout.fetch_source
    source = json.loads(marker.read_text()) if marker.exists() else {}
    bundled = source.get("name") if source.get("kind") == "bundled" else None
    known = [(bundled or "fetched", str(layout.structures))]  # a bundled fetch shares the dataset's origin
    if layout.reference.exists():
        known.append(("reference-hull", str(layout.reference)))
    missing = bundled and set(BUNDLED_DATASETS.get(bundled, ())) - fetched_splits
    return known, bundled if missing else None
