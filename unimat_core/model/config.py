"""Typed configuration of the UniMat denoiser, with named presets.

`tiny` trains to something useful on 2 CPU cores within 30 minutes on perov_5; `small` is for
a workstation; `paper` approaches the published model size and wants a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

# How a sampler steps from noise to data: DDIM (deterministic), ancestral DDPM, or DPM-Solver++(2M).
Sampler = Literal["ddim", "ddpm", "dpm++2m"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)


@dataclass(frozen=True)
class DenoiserConfig:
    """Width and depth of the denoiser; the tensor shape comes from the UniMatSpec, not from here."""

    width: int = 64
    channel_mults: tuple[int, ...] = (1,)
    blocks_per_level: int = 2
    heads: int = 4
    time_dim: int = 128
    slot_attention: bool = True
    grid_attention: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if not self.channel_mults or self.blocks_per_level < 1:
            raise ValueError("need at least one level and one block per level")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DenoiserConfig:
        data = dict(data)
        data["channel_mults"] = tuple(data.get("channel_mults", (1,)))
        return cls(**data)


PRESETS: dict[str, DenoiserConfig] = {
    "tiny": DenoiserConfig(width=48, channel_mults=(1,), blocks_per_level=2, heads=4, time_dim=96),
    "small": DenoiserConfig(width=96, channel_mults=(1, 2), blocks_per_level=2, heads=4, time_dim=192),
    "paper": DenoiserConfig(width=256, channel_mults=(1, 2, 2), blocks_per_level=3, heads=8, time_dim=512),
}

Prediction = Literal["eps", "v"]


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and training target."""

    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    prediction: Prediction = "eps"
    lattice_loss_weight: float = 1.0
    atom_loss_weight: float = 1.0
    # "balanced": atom and empty slots averaged separately and added, so the ~1-2 % atom slots weigh as much
    # as all empty ones: precise positions, which composition-conditioned sampling needs (it pins the empty
    # slots itself). "slots": one mean over every slot (UniMat's plain DDPM loss): the empty slots carry
    # most of the weight and the model learns early where atoms are NOT, which unconditional sampling needs
    # (a balanced tiny model scattered ~100 atoms over a perovskite cell; see benchmarks/RESULTS.md).
    slot_loss: Literal["balanced", "slots"] = "balanced"
    cond_drop_prob: float = 0.1
    # True: an atom's coordinate target is the periodic image of its true position nearest the model's own
    # estimate (0.99 and 0.01 are one place), so an atom on the cell face does not get two distant targets.
    periodic_loss: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionConfig:
        return cls(**data)  # checkpoints from before `slot_loss` get its default, the loss they were trained with


def preset(name: str, **overrides) -> DenoiserConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
