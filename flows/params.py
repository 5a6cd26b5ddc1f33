"""Typed flow parameters, validated before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class TrainParams(BaseModel):
    """Model training; the defaults are the `tiny` preset sized for a short CPU run."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "small", "paper"] = "tiny"
    split: str | None = None
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    max_steps: int = Field(default=1500, ge=1)
    max_minutes: float | None = Field(default=None, gt=0)
    lr_decay_steps: int | None = Field(default=None, ge=1)
    augment_translate: bool = False
    seed: int = 0
    device: str = "auto"

    def core_config(self) -> dict:
        """TrainConfig fields (without dataset/out_dir, which the stage fills in)."""
        return self.model_dump()


class GenerateParams(BaseModel):
    """Sampling: N unconditional structures, or K per composition."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(default=200, ge=1)
    compositions: tuple[str, ...] = ()
    samples_per_composition: int = Field(default=4, ge=1)
    batch_size: int = Field(default=100, ge=1)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = Field(default=50, ge=1)
    guidance: float = Field(default=1.0, ge=0)
    seed: int = 0
    use_ema: bool = True
    device: str = "auto"

    @field_validator("compositions")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from pymatgen.core import Composition

        for formula in value:
            try:
                Composition(formula)
            except Exception as exc:
                raise ValueError(f"{formula!r} is not a chemical formula") from exc
        return value

    def core_config(self, checkpoint: str, out_dir: str) -> dict:
        return {**self.model_dump(), "compositions": list(self.compositions), "checkpoint": checkpoint, "out_dir": out_dir}


class CampaignParams(BaseModel):
    """Everything a discovery campaign needs; the defaults are the README's demo."""

    model_config = ConfigDict(extra="forbid")

    run: RunParams = RunParams()
    source: DatasetSource = DatasetSource()
    tensorize: TensorizeParams = TensorizeParams()
    train: TrainParams = TrainParams()
    generate: GenerateParams = GenerateParams()
