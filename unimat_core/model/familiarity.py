"""How well a model knows given crystals: its denoising loss on each, in the units of its training loss.

A fine-tune starts from what the model knows only when its data lie where the model was trained. A crystal
far outside (a relaxed perovskite that left the cubic cell every perov_5 crystal has: the shipped model's
loss on it is ~70 where its loss on its own data is ~0.1) dominates every gradient step, so a brief
fine-tune on a few of them damages the model instead of teaching it (benchmarks/RESULTS.md "Campaign rounds").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pymatgen.core import Structure

from unimat_core.model.checkpoint import load_model
from unimat_core.model.diffusion import Condition
from unimat_core.representation import composition_grid, encode


def crystal_losses(checkpoint: str, structures: Sequence[Structure], *, draws: int = 16, seed: int = 0,
                   weights: str = "model") -> np.ndarray:
    """The training loss of `checkpoint` on each crystal alone, averaged over `draws` noise levels (the same draws
    for every crystal, so two crystals compare pairwise); NaN where the model's tensor layout cannot hold it.
    `weights`: "model" (the raw weights a fine-tune continues from) or "ema" (the ones that sample)."""
    if weights not in ("model", "ema"):
        raise ValueError(f"weights must be 'model' or 'ema', not {weights!r}")
    loaded = load_model(checkpoint, "cpu", use_ema=weights == "ema")
    model, diffusion, spec = loaded.model, loaded.diffusion, loaded.spec
    batch = encode(list(structures), spec, ids=[str(i) for i in range(len(structures))], on_error="ignore")
    out = np.full(len(structures), np.nan)
    generator = torch.Generator()
    with torch.no_grad():
        for row, position in enumerate(int(i) for i in batch.ids):
            coords = np.repeat(batch.coords[row:row + 1], draws, axis=0)
            lattice = torch.from_numpy(np.repeat(batch.lattice[row:row + 1], draws, axis=0))
            grid = torch.from_numpy(composition_grid(coords, spec) / spec.max_atoms_per_element)
            generator.manual_seed(seed)
            loss, _ = diffusion.loss(model, torch.from_numpy(coords), lattice, Condition(grid, torch.ones(draws)),
                                     generator=generator)
            out[position] = float(loss)
    return out
