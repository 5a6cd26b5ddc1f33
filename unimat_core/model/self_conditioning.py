"""Turn a trained checkpoint into a self-conditioned one that computes the same function.

A self-conditioned denoiser (DenoiserConfig.self_condition) reads its previous clean estimate beside the noisy
input: wider input and lattice layers. Giving the new columns zero weight makes the widened model equal to the
original whatever estimate it is fed, so a fine-tune can teach a trained model to use the estimate instead of
training one from scratch (benchmarks/bench_selfcond_finetune.py).
"""

from __future__ import annotations

import torch

from unimat_core.model.config import DenoiserConfig


def add_self_conditioning(state: dict) -> dict:
    """A copy of checkpoint `state` whose model (and EMA) read the previous estimate with zero weight."""
    config = DenoiserConfig.from_dict(state["model_config"])
    if config.self_condition:
        raise ValueError("the checkpoint is self-conditioned already")
    coordinate_inputs = config.coordinate_features
    widened = dict(state)
    for key in ("model", "ema"):
        weights = dict(state[key])
        old = weights["input.weight"]  # [width, coordinate features + 2 condition channels]
        zeros = old.new_zeros(old.shape[0], coordinate_inputs)
        weights["input.weight"] = torch.cat([old[:, :coordinate_inputs], zeros, old[:, coordinate_inputs:]], dim=1)
        lattice = weights["lattice_mlp.0.weight"]  # [time_dim, 6]
        weights["lattice_mlp.0.weight"] = torch.cat([lattice, torch.zeros_like(lattice)], dim=1)
        widened[key] = weights
    widened["model_config"] = config.model_copy(update={"self_condition": True}).as_dict()
    widened.pop("optimizer", None)  # its moments belong to the narrower weights
    return widened
