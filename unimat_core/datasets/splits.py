"""Reproducible train/val/test assignment that does not depend on row order.

Each id is hashed with a seed to a number in [0, 1); the fractions cut that interval. A
material keeps its split when the source grows or is re-queried in another order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLIT_NAMES = ("train", "val", "test")


def hashed_split(ids: Sequence[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: str = "unimat") -> list[str]:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    out = []
    for structure_id in ids:
        digest = hashlib.sha256(f"{seed}:{structure_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        out.append("train" if u < cut_train else "val" if u < cut_val else "test")
    return out
