"""The optimiser's coordinates of one crystal, as ASE's `FrechetCellFilter` defines them, on plain arrays.

The batched engine steps each crystal in the same coordinates as the one-by-one path (quacc's
`Runner.run_opt` wraps the atoms in a `FrechetCellFilter`), so FIRE/BFGS take the same steps:

- positions are the atoms in the undeformed (initial) cell, one row per atom;
- the cell is 3 extra rows, `n_atoms * log(F)`, with F the deformation gradient from the initial cell
  (ASE's default `exp_cell_factor`; ASE adds a constant `log(n) * I` that no optimiser step sees).

The force on the cell rows is the energy's gradient with respect to log(F). ASE takes it as nine
directional Fréchet derivatives of the matrix exponential; the adjoint identity
<Dexp(L)[E], G> = <E, Dexp(L^T)[G]> gives the same 3x3 with one call.
`FixedCell` is the positions-only counterpart (`relax_cell=False`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm, expm_frechet


@dataclass(frozen=True)
class FixedCell:
    """Positions only: the degrees of freedom are the Cartesian positions, the cell never moves."""

    cell: np.ndarray

    def initial(self, positions: np.ndarray) -> np.ndarray:
        return np.array(positions, dtype=float)

    def atoms(self, dofs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cell) of the degrees of freedom."""
        return dofs, self.cell

    def forces(self, dofs: np.ndarray, forces: np.ndarray, stress: np.ndarray) -> np.ndarray:
        return np.asarray(forces, dtype=float)


@dataclass(frozen=True)
class FrechetCell:
    """Positions and cell relaxed together (ASE `FrechetCellFilter` with its defaults)."""

    orig_cell: np.ndarray  # rows are lattice vectors, as in ASE

    def initial(self, positions: np.ndarray) -> np.ndarray:
        """Degrees of freedom of the starting structure (F = I, so log F = 0)."""
        return np.vstack([np.asarray(positions, dtype=float), np.zeros((3, 3))])

    def _deformation(self, dofs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_atoms = len(dofs) - 3
        log_f = dofs[n_atoms:] / n_atoms
        return log_f, expm(log_f)

    def atoms(self, dofs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cell) of the degrees of freedom."""
        _, deform = self._deformation(dofs)
        return dofs[:-3] @ deform.T, self.orig_cell @ deform.T

    def forces(self, dofs: np.ndarray, forces: np.ndarray, stress: np.ndarray) -> np.ndarray:
        """Forces on the degrees of freedom from atomic forces (eV/A) and the 3x3 stress (eV/A^3, ASE sign)."""
        n_atoms = len(dofs) - 3
        log_f, deform = self._deformation(dofs)
        cell = self.orig_cell @ deform.T
        stress = (stress + stress.T) / 2  # ASE reads stress as Voigt components, i.e. symmetrised
        virial = -abs(np.linalg.det(cell)) * stress
        cell_gradient = virial @ np.linalg.inv(deform.T)  # UnitCellFilter's force on F
        log_force = expm_frechet(log_f.T, cell_gradient, compute_expm=False)
        return np.vstack([np.asarray(forces, dtype=float) @ deform, log_force / n_atoms])


CellCoordinates = FixedCell | FrechetCell


def cell_coordinates(cell: np.ndarray, relax_cell: bool) -> CellCoordinates:
    return FrechetCell(np.array(cell, dtype=float)) if relax_cell else FixedCell(np.array(cell, dtype=float))
