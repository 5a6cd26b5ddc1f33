"""A model's recommended sampling settings: `sampling.json` beside its checkpoint file.

The best classifier-free guidance weight and step count depend on the model: the shipped perov_5 model samples
better without guidance and with 20 steps (CSP k = 20 98.9 % against 98.0 % at weight 1; COV-P 94.3 % at 20 steps
against 93.2 % at 10), carbon_24 needs guidance (validity 47.5 % at 0, 62 % at 1; benchmarks/RESULTS.md "Guidance
weight"). So a checkpoint folder may carry the settings measured best for it, and sampling that leaves a setting
unset (None) uses them, or FALLBACK where the folder recommends nothing. A fine-tune inherits its parent's file
(its weights start there); anyone can write one after their own sweep:

    {"guidance": 0.0, "steps": 20, "why": "CSP k = 20 98.9 % vs 98.0 % at 1 (benchmarks/RESULTS.md)"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unimat_core import atomic
from unimat_core.errors import UserInputError

SAMPLING_FILE = "sampling.json"
# Where the model recommends nothing: guidance 1 (UniMat's paper), 10 steps of the default stochastic solver.
FALLBACK = {"guidance": 1.0, "steps": 10}

SamplingSettings = TypeVar("SamplingSettings", bound=BaseModel)  # a config with `guidance` and `steps` fields


class SamplingDefaultsError(UserInputError):
    """A sampling.json that is not a valid recommendation (named, with what is wrong): a file the user edits."""


class SamplingDefaults(BaseModel):
    """What a model folder recommends (unset: the fallback); `why` says where the numbers come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guidance: float | None = Field(default=None, ge=0, description="classifier-free guidance weight")
    steps: int | None = Field(default=None, ge=1, description="sampler steps")
    why: str = ""

    def value(self, name: str) -> float | int:
        recommended = getattr(self, name)
        return FALLBACK[name] if recommended is None else recommended


NONE = SamplingDefaults()


def defaults_file(checkpoint_file: str | Path) -> Path:
    return Path(checkpoint_file).parent / SAMPLING_FILE


def read_sampling_defaults(checkpoint_file: str | Path) -> SamplingDefaults | None:
    """The recommendation beside a checkpoint file, None without one; a malformed file is an error naming it."""
    path = defaults_file(checkpoint_file)
    if not path.exists():
        return None
    try:
        return SamplingDefaults.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise SamplingDefaultsError(f"{path}: not a valid sampling recommendation ({detail}); fix or delete it") from None


def with_recommended(config: SamplingSettings, recommended: SamplingDefaults | None) -> SamplingSettings:
    """`config` with every sampling setting it leaves unset taken from `recommended` (else the fallback)."""
    unset = {name: (recommended or NONE).value(name) for name in FALLBACK if getattr(config, name) is None}
    return config.model_copy(update=unset) if unset else config


def inherit_sampling_defaults(parent_checkpoint: str | Path, folder: str | Path) -> bool:
    """Copy a parent model's recommendation into a fine-tune's folder (unless it has its own); True if copied."""
    recommended = read_sampling_defaults(parent_checkpoint)
    target = Path(folder) / SAMPLING_FILE
    if recommended is None or target.exists():
        return False
    why = f"inherited from {parent_checkpoint}" + (f": {recommended.why}" if recommended.why else "")
    copy = recommended.model_dump(exclude={"why"}, exclude_none=True)
    atomic.write_text(target, json.dumps({**copy, "why": why}, indent=1) + "\n")
    return True
