"""Typed flow parameters, validated before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from unimat_core.datasets.source import DatasetSource
from unimat_core.run_layout import RunLayout


def default_results_root() -> str:
    return os.environ.get("UNIMAT_RESULTS_ROOT", "runs")


class RunParams(BaseModel):
    """Where a campaign lives: `<results_root>/<campaign>/<stage>/`."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(default="demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    results_root: str = Field(default_factory=default_results_root)

    def layout(self) -> RunLayout:
        return RunLayout(Path(self.results_root).resolve(), self.campaign)


class TensorizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_atoms_per_element: int | None = Field(default=None, ge=1, le=256)
    shard_size: int = Field(default=4096, ge=1)


class CampaignParams(BaseModel):
    """Everything a discovery campaign needs; the defaults are the README's demo."""

    model_config = ConfigDict(extra="forbid")

    run: RunParams = RunParams()
    source: DatasetSource = DatasetSource()
    tensorize: TensorizeParams = TensorizeParams()
