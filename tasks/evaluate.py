"""Evaluate stage: benchmark metrics of a generation folder against a reference split."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from unimat_core.metrics import MetricsConfig, evaluate_structures, write_metrics
from unimat_core.metrics.csp import CSPConfig, evaluate_csp, write_csp
from unimat_core.metrics.csp import markdown as csp_markdown
from unimat_core.metrics.known import read_known
from unimat_core.model.checkpoint import load_model
from unimat_core.model.device import pick_device
from unimat_core.model.generation import read_generated
from unimat_core.structure_table import read_structures

SUMMARY_KEYS = ("n_generated", "n_valid", "n_eval", "struct_validity", "comp_validity", "validity", "cov_recall",
                "cov_precision", "emd_density", "emd_n_elements", "uniqueness", "novelty")


def _table(path: str, split: str | None) -> pd.DataFrame:
    frame = read_structures(path)
    if split is None:
        return frame
    chosen = frame[frame["split"] == split].reset_index(drop=True)
    if chosen.empty:
        raise ValueError(f"{path} has no rows with split {split!r} (splits: {sorted(frame['split'].unique())})")
    return chosen


def _artifact_key(out_dir: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    parts = Path(out_dir).resolve().parts[-2:]
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(("metrics", *parts)).lower()).strip("-")


@task(name="evaluate-generated")
def evaluate_generated(generated_dir: str, reference_path: str, known: list[tuple[str, str]] | None,
                       config: MetricsConfig, out_dir: str, reference_split: str | None = None,
                       known_bundled: str | None = None) -> dict:
    """Read parquet, compute the metrics, write per_structure/summary parquet + markdown; return paths + headline.

    Novelty is against every crystal of the `known` (origin, parquet) tables and of the bundled dataset
    `known_bundled` (unimat_core.metrics.known); without either, it is not measured."""
    logger = get_run_logger()
    source = Path(generated_dir)
    generated = read_generated(source) if source.is_dir() else pd.read_parquet(source)
    reference = _table(reference_path, reference_split)
    known_table = read_known(known or [], known_bundled) if known or known_bundled else None
    logger.info("evaluate: %d generated vs %d reference%s", len(generated), len(reference),
                f", novelty vs {len(known_table)} known crystals {dict(known_table['known_from'].value_counts())}"
                if known_table is not None else "")
    result = evaluate_structures(generated, reference, known_table, config)
    paths = write_metrics(result, out_dir)
    create_markdown_artifact(key=_artifact_key(out_dir), markdown=result.markdown(), description="generation metrics")
    headline = {key: result.summary[key] for key in SUMMARY_KEYS}
    logger.info("evaluate: %s", ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    return {**paths, "out_dir": str(out_dir), **headline}


@task(name="evaluate-csp")
def evaluate_csp_task(checkpoint: str, reference_path: str, reference_split: str | None, config: CSPConfig, out_dir: str,
                      dataset: str | None = None) -> dict:
    """CSP match rate / RMSE of the model on the reference split: sample, match, write parquet + markdown."""
    logger = get_run_logger()
    reference = _table(reference_path, reference_split)
    loaded = load_model(checkpoint, pick_device("auto"))
    config = loaded.recommended(config)
    logger.info("csp: k=%d on %s of %d reference crystals, %d steps, guidance %g, noise scale %g", config.k,
                config.n_targets or "all", len(reference), config.steps, config.guidance, config.noise_scale)
    per_target, summary = evaluate_csp(loaded, reference, config)
    paths = write_csp(per_target, summary, out_dir, dataset)
    create_markdown_artifact(key=_artifact_key(out_dir), markdown=csp_markdown(summary, dataset),
                             description="crystal structure prediction")
    logger.info("csp: match rate %.4f, RMSE %.4f", summary["match_rate"], summary["rmse"])
    return {**paths, "out_dir": out_dir, **summary}
