"""Training-time augmentations that change the tensor but not the crystal.

Both act on encoded coordinate tensors [N, L, H, W, 3] (numpy), leaving null slots at the
null location:
- `permute_slots`: shuffles the L slots of every element independently (atoms of one
  element are indistinguishable, so their order is arbitrary);
- `translate`: adds one random periodic shift per crystal to every atom (the origin of a
  periodic cell is arbitrary).
"""

from __future__ import annotations

import numpy as np

from unimat_core.representation import UniMatSpec


def _occupied(coords: np.ndarray, spec: UniMatSpec) -> np.ndarray:
    return coords.mean(axis=-1, keepdims=True) > spec.null_threshold


def permute_slots(coords: np.ndarray, spec: UniMatSpec, rng: np.random.Generator) -> np.ndarray:
    """A copy with each (crystal, element) cell's slots in a random order."""
    keys = rng.random(coords.shape[:4])
    order = np.argsort(keys, axis=1)[..., None]
    return np.take_along_axis(coords, order, axis=1)


def translate(coords: np.ndarray, spec: UniMatSpec, rng: np.random.Generator) -> np.ndarray:
    """A copy with every atom of crystal i shifted by the same random vector t_i, wrapped into [0, 1)."""
    shift = rng.random((coords.shape[0], 1, 1, 1, 3))
    moved = ((coords.astype(np.float64) + shift) % 1.0).astype(np.float32)
    moved[moved >= 1.0] = 0.0
    return np.where(_occupied(coords, spec), moved, coords).astype(np.float32)


def augment(coords: np.ndarray, spec: UniMatSpec, rng: np.random.Generator) -> np.ndarray:
    """Both augmentations, as used in training."""
    return translate(permute_slots(coords, spec, rng), spec, rng)
