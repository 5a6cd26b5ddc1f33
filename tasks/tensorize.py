"""Tensorize stage: structure table -> UniMat tensor shards (reused when inputs and spec are unchanged)."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from prefect import get_run_logger, task

from unimat_core.run_layout import RunLayout
from unimat_core.tensor_store import REJECTED, TensorizeConfig, tensorize_file


@task(name="tensorize")
def tensorize_structures(layout: RunLayout, config: TensorizeConfig) -> dict:
    logger = get_run_logger()
    structures = layout.require(layout.structures, made_by="fetch")
    summary = tensorize_file(structures, layout.tensors, config=config)
    logger.info("tensorize: %s", {k: v for k, v in summary.as_dict().items() if k != "warnings"})
    if summary.n_rejected:
        reasons = Counter(pd.read_parquet(layout.tensors / REJECTED, columns=["reason"])["reason"].str.split(":").str[0])
        logger.warning("tensorize: %d crystals left out (%s), each with its reason in %s", summary.n_rejected,
                       ", ".join(f"{n}x {r}" for r, n in reasons.most_common(3)), layout.tensors / REJECTED)
    for warning in summary.warnings:
        logger.warning("tensorize: %s", warning)
    return summary.as_dict()
