"""Earth mover's distances of property distributions (CDVAE: density and number of elements)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import wasserstein_distance


def emd(generated: Sequence[float], reference: Sequence[float]) -> float:
    """1-D Wasserstein distance over finite values; NaN when either side is empty."""
    gen = np.asarray(generated, dtype=float)
    ref = np.asarray(reference, dtype=float)
    gen, ref = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
    if len(gen) == 0 or len(ref) == 0:
        return float("nan")
    return float(wasserstein_distance(gen, ref))


def eval_subset(valid: np.ndarray, n_eval: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of the valid rows (all of them if there are <= n_eval)."""
    candidates = np.flatnonzero(valid)
    if len(candidates) <= n_eval:
        return candidates
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n_eval, replace=False))
