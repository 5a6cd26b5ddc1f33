"""Complete, atomically written checkpoints, loaded with `weights_only=True`.

A checkpoint holds everything needed to resume training or to sample: model and EMA
weights, optimizer state, step and epoch position, best loss, the model / diffusion / UniMat
configs and the package version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unimat_core import __version__
from unimat_core.atomic import atomic_path
from unimat_core.model.composition_prior import CompositionPrior, PriorConfig
from unimat_core.model.config import DenoiserConfig, DiffusionConfig
from unimat_core.model.denoiser import UniMatDenoiser
from unimat_core.model.diffusion import GaussianDiffusion
from unimat_core.model.pretrained import checkpoint_file
from unimat_core.model.sampling_defaults import SamplingDefaults, SamplingSettings, read_sampling_defaults, with_recommended
from unimat_core.representation import UniMatSpec



def save_checkpoint(path: Path, state: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save({**state, "version": __version__}, tmp)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint file, a training folder holding `last.pt`, or a shipped model (`pretrained:perov_5`)."""
    path = checkpoint_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run `unimat train` first")
    return torch.load(path, map_location=device, weights_only=True)


@dataclass
class LoadedModel:
    """A model ready to sample: EMA (or raw) weights, diffusion and the UniMat spec it was trained on."""

    model: UniMatDenoiser
    diffusion: GaussianDiffusion
    spec: UniMatSpec
    step: int
    prior: CompositionPrior | None = None  # learned composition prior (checkpoints from before it have none)
    sampling: SamplingDefaults | None = None  # the model folder's recommended sampling settings (sampling.json)

    def recommended(self, config: SamplingSettings) -> SamplingSettings:
        """A sampling config (GenerateConfig, CSPConfig) with what it leaves unset (guidance, steps, noise scale)
        taken from this model's recommendation, else the fallback."""
        return with_recommended(config, self.sampling)

    @property
    def device(self) -> torch.device:
        """Where the weights live (the sampling batches and their lanes follow them)."""
        return next(self.model.parameters()).device


def build_model(model_config: DenoiserConfig, spec: UniMatSpec) -> UniMatDenoiser:
    return UniMatDenoiser(model_config, spec.max_atoms_per_element, spec.grid.height, spec.grid.width, spec.lattice)


def load_model(path: str | Path, device: torch.device | str = "cpu", use_ema: bool = True) -> LoadedModel:
    sampling = read_sampling_defaults(checkpoint_file(path))  # a malformed file fails before the weights load
    state = load_checkpoint(path, device)
    spec = UniMatSpec.from_dict(state["spec"])
    model = build_model(DenoiserConfig.from_dict(state["model_config"]), spec)
    model.load_state_dict(state["ema"] if use_ema else state["model"])
    model.to(device).eval()
    diffusion = GaussianDiffusion(DiffusionConfig.from_dict(state["diffusion_config"]), spec.null_value).to(device)
    prior = None
    if "composition_prior" in state:
        prior = CompositionPrior(spec, PriorConfig.from_dict(state["composition_prior"]["config"]))
        prior.load_state_dict(state["composition_prior"]["state"])
        if "atom_counts" in state["composition_prior"]:  # checkpoints from before the histogram sample without it
            prior.atom_counts = np.asarray(state["composition_prior"]["atom_counts"], dtype=np.int64)
        prior.to(device).eval()
    return LoadedModel(model, diffusion, spec, int(state["step"]), prior, sampling)
