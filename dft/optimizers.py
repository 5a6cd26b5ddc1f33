"""ASE's FIRE and BFGS steps for one crystal's coordinates, so the batched engine walks ASE's path.

Same defaults and the same arithmetic as `ase.optimize.FIRE` / `ase.optimize.BFGS` (ASE 3.29), one
object per crystal: the batched engine calls `step(x, forces)` after each batched force call, with
`x` and `forces` as (rows, 3) arrays of the crystal's degrees of freedom (see `dft.cell_filter`).
Kept separate from ASE's classes because those own an `Atoms` object and call its calculator.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Stepper(Protocol):
    def step(self, x: np.ndarray, forces: np.ndarray) -> np.ndarray:
        """The next coordinates from the current ones and the forces on them."""


def _largest_row(dx: np.ndarray) -> float:
    return float(np.linalg.norm(dx.reshape(-1, 3), axis=1).max())


class Fire:
    """FIRE (Bitzek et al. 2006) as ASE implements it: velocity mixing, adaptive dt, step cap."""

    def __init__(self, dt: float = 0.1, maxstep: float = 0.2, dtmax: float = 1.0, n_min: int = 5,
                 finc: float = 1.1, fdec: float = 0.5, astart: float = 0.1, fa: float = 0.99) -> None:
        self.dt, self.maxstep, self.dtmax, self.n_min = dt, maxstep, dtmax, n_min
        self.finc, self.fdec, self.astart, self.fa = finc, fdec, astart, fa
        self.a = astart
        self.n_downhill = 0
        self.vel: np.ndarray | None = None

    def step(self, x: np.ndarray, forces: np.ndarray) -> np.ndarray:
        f = forces.ravel()
        if self.vel is None:
            self.vel = np.zeros_like(f)
        elif np.vdot(f, self.vel) > 0.0:
            self.vel = (1.0 - self.a) * self.vel + self.a * f / np.sqrt(np.vdot(f, f)) * np.sqrt(
                np.vdot(self.vel, self.vel))
            if self.n_downhill > self.n_min:
                self.dt = min(self.dt * self.finc, self.dtmax)
                self.a *= self.fa
            self.n_downhill += 1
        else:
            self.vel[:] = 0.0
            self.a = self.astart
            self.dt *= self.fdec
            self.n_downhill = 0
        self.vel += self.dt * f
        dx = self.dt * self.vel
        norm = np.sqrt(np.vdot(dx, dx))
        if norm > self.maxstep:
            dx = self.maxstep * dx / norm
        return x + dx.reshape(x.shape)


class Bfgs:
    """BFGS with ASE's initial Hessian (70 eV/A^2 * I), |eigenvalue| steps and a 0.2 A largest-row cap."""

    def __init__(self, alpha: float = 70.0, maxstep: float = 0.2) -> None:
        self.alpha, self.maxstep = alpha, maxstep
        self.hessian: np.ndarray | None = None
        self.x0: np.ndarray | None = None
        self.g0: np.ndarray | None = None

    def _update(self, x: np.ndarray, g: np.ndarray) -> None:
        if self.hessian is None:
            self.hessian = np.eye(len(x)) * self.alpha
            return
        dx = x - self.x0
        if np.abs(dx).max() < 1e-7:  # same configuration again
            return
        dg = g - self.g0
        hdx = self.hessian @ dx
        self.hessian += np.outer(dg, dg) / (dx @ dg) - np.outer(hdx, hdx) / (dx @ hdx)

    def step(self, x: np.ndarray, forces: np.ndarray) -> np.ndarray:
        flat, g = x.ravel(), -forces.ravel()
        self._update(flat, g)
        self.x0, self.g0 = flat.copy(), g.copy()
        omega, vectors = np.linalg.eigh(self.hessian)
        dx = -vectors @ (g @ vectors / np.fabs(omega))
        longest = _largest_row(dx)
        if longest >= self.maxstep:
            dx *= self.maxstep / longest
        return x + dx.reshape(x.shape)


def make_stepper(name: str) -> Stepper:
    """A fresh optimiser state for one crystal ("FIRE" or "BFGS", as in `RelaxConfig.optimizer`)."""
    steppers = {"FIRE": Fire, "BFGS": Bfgs}
    if name not in steppers:
        raise ValueError(f"no batched optimizer {name!r}; known: {sorted(steppers)}")
    return steppers[name]()
