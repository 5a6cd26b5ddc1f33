"""The Fréchet cell coordinates on plain arrays against ASE's FrechetCellFilter itself (EMT, real forces)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter

from dft.cell_filter import FixedCell, FrechetCell, cell_coordinates


def _deformed_cu():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    return atoms


def test_forces_and_geometry_match_ase_after_a_cell_step():
    atoms = _deformed_cu()
    ase_filter = FrechetCellFilter(atoms)
    coords = FrechetCell(atoms.cell.array.copy())
    x = coords.initial(atoms.positions)
    step = np.random.default_rng(0).normal(scale=0.05, size=x.shape)  # move atoms and shear the cell
    x = x + step
    ase_filter.set_positions(ase_filter.get_positions() + step)

    positions, cell = coords.atoms(x)
    assert np.allclose(cell, atoms.cell.array, atol=1e-12)
    assert np.allclose(positions, atoms.positions, atol=1e-12)
    mine = coords.forces(x, atoms.get_forces(), atoms.get_stress(voigt=False))
    assert np.allclose(mine, ase_filter.get_forces(), atol=1e-10)
    assert np.abs(mine[-3:]).max() > 1e-3  # the cell rows carry a real stress, not zeros


def test_fixed_cell_is_plain_positions():
    atoms = _deformed_cu()
    coords = cell_coordinates(atoms.cell.array, relax_cell=False)
    assert isinstance(coords, FixedCell)
    x = coords.initial(atoms.positions)
    positions, cell = coords.atoms(x)
    assert np.array_equal(positions, atoms.positions) and np.array_equal(cell, atoms.cell.array)
    forces = atoms.get_forces()
    assert np.array_equal(coords.forces(x, forces, atoms.get_stress(voigt=False)), forces)
    assert isinstance(cell_coordinates(atoms.cell.array, relax_cell=True), FrechetCell)
