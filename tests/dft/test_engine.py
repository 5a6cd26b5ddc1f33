"""Which engine relaxes what: batched for ML potentials by default, one by one for EMT and out-of-process codes."""

from __future__ import annotations

import pytest

from dft.calculators import CalculatorConfig, CalculatorUnavailable, build_calculator
from dft.engine import batched_potential, relax_structures
from dft.potentials import AseCalculatorBatch, ChgnetBatch
from dft.relax import RelaxConfig
from tests.dft.test_batched import cu_cells


def test_ml_potentials_go_batched_unless_told_otherwise(chgnet):
    assert isinstance(batched_potential(chgnet, RelaxConfig()), ChgnetBatch)
    assert batched_potential(chgnet, RelaxConfig(engine="ase")) is None


def test_emt_goes_one_by_one_unless_asked_to_batch():
    emt = build_calculator(CalculatorConfig("emt"))
    assert batched_potential(emt, RelaxConfig()) is None
    assert isinstance(batched_potential(emt, RelaxConfig(engine="batched")), AseCalculatorBatch)


def test_out_of_process_codes_cannot_be_batched():
    assert batched_potential(CalculatorConfig("gpaw"), RelaxConfig()) is None
    with pytest.raises(CalculatorUnavailable, match="outside this process"):
        batched_potential(CalculatorConfig("vasp"), RelaxConfig(engine="batched"))


def test_both_engines_return_one_result_per_structure_in_order():
    cells = cu_cells(3, seed=5)
    emt = CalculatorConfig("emt")
    for engine in ("ase", "batched"):
        results = relax_structures(cells, emt, RelaxConfig(fmax=0.01, engine=engine))
        assert [r.structure.lattice.a for r in results] == pytest.approx([3.59] * 3, abs=0.01)
        assert all(r.converged and r.calculator == "emt" for r in results)
        assert [r.rmsd for r in results] == pytest.approx([0.1] * 3, abs=0.05)  # each started from its own cell
    assert relax_structures([], emt) == []
