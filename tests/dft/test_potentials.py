"""Batched potentials give each crystal what its ASE calculator gives it alone, and isolate bad crystals."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from dft.calculators import CalculatorConfig, build_calculator
from dft.potentials import AseCalculatorBatch, Evaluation, Snapshot
from tests.dft.conftest import perturbed_test_crystals


def snapshot(structure: Structure) -> Snapshot:
    return Snapshot(tuple(structure.species), np.array(structure.atomic_numbers), structure.cart_coords,
                    structure.lattice.matrix)


def ase_evaluation(structure: Structure, calculator) -> Evaluation:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    return Evaluation(atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False))


def assert_same(batched: Evaluation, alone: Evaluation, n_atoms: int) -> None:
    assert batched.energy / n_atoms == pytest.approx(alone.energy / n_atoms, abs=1e-5)  # eV/atom, float32 model
    assert np.allclose(batched.forces, alone.forces, atol=1e-4)  # eV/A
    assert np.allclose((batched.stress + batched.stress.T) / 2, alone.stress, atol=1e-5)  # eV/A^3 (~2 MPa)


def test_chgnet_batch_matches_its_ase_calculator_per_crystal(chgnet):
    crystals = perturbed_test_crystals("perov_5", 3) + perturbed_test_crystals("carbon_24", 2)
    together = chgnet.batched.evaluate([snapshot(s) for s in crystals])
    for structure, evaluation in zip(crystals, together):
        assert_same(evaluation, ase_evaluation(structure, chgnet.calculator), len(structure))
    alone = chgnet.batched.evaluate([snapshot(crystals[1])])[0]
    assert alone.energy == together[1].energy and np.array_equal(alone.forces, together[1].forces)


def test_a_crystal_the_model_cannot_take_fails_alone(chgnet):
    """Americium is beyond CHGNet's 94 elements: the batched pass fails, the crystals are retried one by one."""
    good = perturbed_test_crystals("perov_5", 2)
    bad = Structure(Lattice.cubic(3.5), ["Am"], [[0, 0, 0]])
    outcomes = chgnet.batched.evaluate([snapshot(good[0]), snapshot(bad), snapshot(good[1])])
    assert isinstance(outcomes[1], str) and "IndexError" in outcomes[1]
    for structure, outcome in zip(good, outcomes[::2]):
        assert_same(outcome, ase_evaluation(structure, chgnet.calculator), len(structure))


def test_sevennet_batch_matches_its_ase_calculator_per_crystal():
    pytest.importorskip("sevenn", reason="needs the `mlip` extra")
    built = build_calculator(CalculatorConfig("sevennet", device="cpu"))
    crystals = perturbed_test_crystals("perov_5", 3)
    for structure, evaluation in zip(crystals, built.batched.evaluate([snapshot(s) for s in crystals])):
        assert_same(evaluation, ase_evaluation(structure, built.calculator), len(structure))


def test_ase_calculator_batch_records_calculator_errors_per_crystal():
    from ase.calculators.emt import EMT

    cu = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # EMT has no Na/Cl
    outcomes = AseCalculatorBatch(EMT()).evaluate([snapshot(cu), snapshot(nacl)])
    assert_same(outcomes[0], ase_evaluation(cu, EMT()), 4)
    assert outcomes[1].startswith("NotImplementedError")
