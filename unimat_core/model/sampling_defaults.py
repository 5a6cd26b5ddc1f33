"""A model's recommended sampling settings: `sampling.json` beside its checkpoint file.

The best classifier-free guidance weight depends on the model: the shipped perov_5 model samples better without
guidance (CSP k = 20 98.9 % against 98.0 % at weight 1), carbon_24 needs it (validity 47.5 % at 0, 62 % at 1;
benchmarks/RESULTS.md "Guidance weight"). So a checkpoint folder may carry the weight measured best for it, and
sampling that leaves `guidance` unset (None) uses it, or FALLBACK_GUIDANCE when the folder has no such file.
A fine-tune inherits its parent's file (its weights start there); anyone can write one after their own sweep:

    {"guidance": 0.0, "why": "CSP k = 20 98.9 % vs 98.0 % at 1 (benchmarks/RESULTS.md)"}
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unimat_core import atomic
from unimat_core.errors import UserInputError

SAMPLING_FILE = "sampling.json"
FALLBACK_GUIDANCE = 1.0  # where the model recommends nothing: the weight UniMat's paper and this package's tests use


class SamplingDefaultsError(UserInputError):
    """A sampling.json that is not a valid recommendation (named, with what is wrong): a file the user edits."""


class SamplingDefaults(BaseModel):
    """What a model folder recommends; `why` says where the numbers come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guidance: float = Field(ge=0, description="classifier-free guidance weight measured best for this model")
    why: str = ""


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


def resolve_guidance(guidance: float | None, checkpoint_file: str | Path) -> float:
    """The weight to sample with: the one asked for, else the model's recommendation, else FALLBACK_GUIDANCE."""
    if guidance is not None:
        return guidance
    recommended = read_sampling_defaults(checkpoint_file)
    return recommended.guidance if recommended is not None else FALLBACK_GUIDANCE


def inherit_sampling_defaults(parent_checkpoint: str | Path, folder: str | Path) -> bool:
    """Copy a parent model's recommendation into a fine-tune's folder (unless it has its own); True if copied."""
    recommended = read_sampling_defaults(parent_checkpoint)
    target = Path(folder) / SAMPLING_FILE
    if recommended is None or target.exists():
        return False
    why = f"inherited from {parent_checkpoint}" + (f": {recommended.why}" if recommended.why else "")
    atomic.write_text(target, json.dumps({"guidance": recommended.guidance, "why": why}, indent=1) + "\n")
    return True
