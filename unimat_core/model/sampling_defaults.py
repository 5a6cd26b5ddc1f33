"""A model's recommended sampling settings: `sampling.json` beside its checkpoint file.

The best classifier-free guidance weight and step count depend on the model: the shipped perov_5 model samples
better without guidance and with 20 steps (CSP k = 20 98.9 % against 98.0 % at weight 1; COV-P 94.3 % at 20 steps
against 93.2 % at 10), carbon_24 needs guidance (validity 47.5 % at 0, 62 % at 1; benchmarks/RESULTS.md "Guidance
weight"). So a checkpoint folder may carry the settings measured best for it, and sampling that leaves a setting
unset (None) uses them, or the fallback where the folder recommends nothing. A step count is a property of the
sampler it was measured with (20 steps of the stochastic DPM-Solver++ are not 20 of DDPM), so the file names that
sampler and its steps apply to it only; sampling with another takes that sampler's own fallback count. So does
the noise scale (the share of a stochastic sampler's fresh noise kept each step; 0.4 of the stochastic
DPM-Solver++'s noise is not 0.4 of DDPM's). Guidance applies to every sampler (it is the model's: carbon_24 wants it
with each). A fine-tune inherits its parent's file (its weights start there); anyone can write one after their
own sweep:

    {"sampler": "dpm++2m-sde", "guidance": 0.0, "steps": 20, "noise_scale": 0.4, "why": "... (RESULTS.md)"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unimat_core import atomic
from unimat_core.errors import UserInputError
from unimat_core.model.config import Sampler

SAMPLING_FILE = "sampling.json"
# Where the model recommends nothing: guidance 1 (UniMat's paper) and each sampler's step count measured adequate
# (benchmarks/RESULTS.md "Sampler"): 10 for the DPM-Solver++ pair, 50 for DDIM (10 lost 13 points of COV-P), 100 for
# ancestral DDPM (as valid as 1,000 on carbon_24).
FALLBACK_GUIDANCE = 1.0
FALLBACK_STEPS: dict[str, int] = {"dpm++2m-sde": 10, "dpm++2m": 10, "ddim": 50, "ddpm": 100}
FALLBACK_NOISE_SCALE = 1.0  # the sampler as derived: the model's own distribution

SamplingSettings = TypeVar("SamplingSettings", bound=BaseModel)  # has `sampler`, `guidance`, `steps`, `noise_scale`


class SamplingDefaultsError(UserInputError):
    """A sampling.json that is not a valid recommendation (named, with what is wrong): a file the user edits."""


class SamplingDefaults(BaseModel):
    """What a model folder recommends (unset: the fallback); `why` says where the numbers come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampler: Sampler | None = Field(default=None, description="the sampler the steps were measured with (unset: "
                                   "they apply to any)")
    guidance: float | None = Field(default=None, ge=0, description="classifier-free guidance weight")
    steps: int | None = Field(default=None, ge=1, description="sampler steps")
    noise_scale: float | None = Field(default=None, ge=0, description="scale of the sampler's fresh noise")
    why: str = ""

    def for_sampler(self, sampler: Sampler) -> dict[str, float | int]:
        """The guidance, steps and noise scale to sample with `sampler`: the recommended ones, else the fallback."""
        measured_with = self.sampler in (None, sampler)
        return {"guidance": FALLBACK_GUIDANCE if self.guidance is None else self.guidance,
                "steps": self.steps if measured_with and self.steps is not None else FALLBACK_STEPS[sampler],
                "noise_scale": self.noise_scale if measured_with and self.noise_scale is not None
                else FALLBACK_NOISE_SCALE}


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
        detail = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise SamplingDefaultsError(f"{path}: not a valid sampling recommendation ({detail}); fix or delete it") from None


def _first_error(exc: ValidationError) -> str:
    """'steps: Input should be greater than or equal to 1': the field named, as the user wrote it in the file."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def with_recommended(config: SamplingSettings, recommended: SamplingDefaults | None) -> SamplingSettings:
    """`config` with every sampling setting it leaves unset taken from `recommended` (else the fallback)."""
    values = (recommended or NONE).for_sampler(config.sampler)
    unset = {name: value for name, value in values.items() if getattr(config, name) is None}
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
