"""Normalised unit-cell parameters the diffusion model learns alongside the atoms.

Lengths are encoded as standardised logarithms (positive by construction after decoding,
and scale-free), angles as (degrees - centre) / scale. Both maps are affine or log-affine,
so the round trip is exact up to float32 rounding (~1e-7 relative).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatticeEncoding:
    """Affine normalisation of (a, b, c, alpha, beta, gamma)."""

    log_length_mean: float = math.log(5.0)
    log_length_std: float = 0.5
    angle_center: float = 90.0
    angle_scale: float = 30.0

    def __post_init__(self) -> None:
        if not (self.log_length_std > 0 and self.angle_scale > 0):
            raise ValueError("lattice encoding scales must be positive")

    def encode(self, parameters: np.ndarray) -> np.ndarray:
        """[N, 6] (a, b, c in Angstrom, angles in degrees) -> [N, 6] float32."""
        parameters = np.asarray(parameters, dtype=np.float64)
        out = np.empty_like(parameters)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, :3] = (np.log(parameters[:, :3]) - self.log_length_mean) / self.log_length_std
        out[:, 3:] = (parameters[:, 3:] - self.angle_center) / self.angle_scale
        return out.astype(np.float32)

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        """[N, 6] normalised -> [N, 6] float64 lattice parameters."""
        encoded = np.asarray(encoded, dtype=np.float64)
        out = np.empty_like(encoded)
        with np.errstate(over="ignore", invalid="ignore"):
            out[:, :3] = np.exp(encoded[:, :3] * self.log_length_std + self.log_length_mean)
        out[:, 3:] = encoded[:, 3:] * self.angle_scale + self.angle_center
        return out

    @classmethod
    def fit(cls, parameters: np.ndarray) -> LatticeEncoding:
        """Centre and scale fitted to a dataset's lattice parameters (std floored for cubic sets)."""
        parameters = np.asarray(parameters, dtype=np.float64)
        log_lengths = np.log(parameters[:, :3])
        angles = parameters[:, 3:]
        return cls(
            log_length_mean=float(log_lengths.mean()),
            log_length_std=max(float(log_lengths.std()), 0.05),
            angle_center=90.0,
            angle_scale=max(float(np.abs(angles - 90.0).max()), 10.0),
        )

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatticeEncoding:
        return cls(**{k: float(v) for k, v in data.items()})


def reduced_volume_squared(parameters: np.ndarray) -> np.ndarray:
    """(V / abc)^2 for each row of [N, 6] parameters: <= 0 means the angles admit no cell."""
    ca, cb, cg = np.cos(np.radians(np.asarray(parameters, dtype=np.float64)[:, 3:])).T
    return 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg


def lattice_matrices(parameters: np.ndarray) -> np.ndarray:
    """[N, 6] parameters -> [N, 3, 3] row-vector cell matrices, pymatgen's `Lattice.from_parameters`
    convention (c along z, a in the xz plane), computed for the whole batch at once."""
    parameters = np.asarray(parameters, dtype=np.float64)
    a, b, c = parameters[:, 0], parameters[:, 1], parameters[:, 2]
    alpha, beta, gamma = np.radians(parameters[:, 3:]).T
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_gamma_star = np.clip((np.cos(alpha) * np.cos(beta) - np.cos(gamma)) / (np.sin(alpha) * np.sin(beta)), -1, 1)
    gamma_star = np.arccos(cos_gamma_star)
    matrices = np.zeros((len(parameters), 3, 3))
    matrices[:, 0, 0] = a * np.sin(beta)
    matrices[:, 0, 2] = a * np.cos(beta)
    matrices[:, 1, 0] = -b * np.sin(alpha) * np.cos(gamma_star)
    matrices[:, 1, 1] = b * np.sin(alpha) * np.sin(gamma_star)
    matrices[:, 1, 2] = b * np.cos(alpha)
    matrices[:, 2, 2] = c
    return matrices
