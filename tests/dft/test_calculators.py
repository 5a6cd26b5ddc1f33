"""The calculator registry: real calculators built from typed configs, clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.calculators import (
    BuiltCalculator,
    CalculatorConfig,
    CalculatorUnavailable,
    available_calculators,
    build_calculator,
    register_calculator,
)
from dft.relax import RelaxConfig, relax_structure


def test_registry_lists_every_calculator_and_round_trips_configs():
    assert {"chgnet", "sevennet", "emt", "gpaw", "vasp", "espresso"} <= set(available_calculators())
    config = CalculatorConfig("sevennet", device="cpu", model="7net-0", options={"modal": None}, cpu_threads=2)
    assert CalculatorConfig.from_dict(config.as_dict()) == config


def test_unknown_and_out_of_process_names_are_clear_errors():
    with pytest.raises(CalculatorUnavailable, match="unknown calculator 'mace'"):
        build_calculator(CalculatorConfig("mace"))
    with pytest.raises(CalculatorUnavailable, match="not an in-process calculator"):
        build_calculator(CalculatorConfig("gpaw"))


def test_registered_calculator_is_used(monkeypatch):
    from ase.calculators.lj import LennardJones

    import dft.calculators

    monkeypatch.setattr(dft.calculators, "_FACTORIES", dict(dft.calculators._FACTORIES))  # undone after
    register_calculator("lj-test", lambda cfg: BuiltCalculator(LennardJones(sigma=2.3, epsilon=0.1, rc=6.0),
                                                               "lj-test", "ase LennardJones"))
    argon = Structure(Lattice.cubic(3.6), ["Ar"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    result = relax_structure(argon, CalculatorConfig("lj-test"), RelaxConfig(fmax=0.01))
    assert result.converged and result.calculator == "lj-test"
    # fcc LJ (truncated at 6 A) nearest-neighbour distance close to 2^(1/6) sigma = 2.58 A
    assert result.structure.lattice.a / np.sqrt(2) == pytest.approx(2.58, abs=0.08)


def test_sevennet_relaxes_nacl_offline():
    pytest.importorskip("sevenn", reason="needs the `mlip` extra (make EXTRAS must include mlip)")
    primitive = Structure(Lattice.from_parameters(4.1, 4.1, 4.1, 60, 60, 60), ["Na", "Cl"],
                          [[0, 0, 0], [0.5, 0.5, 0.5]])
    result = relax_structure(primitive, CalculatorConfig("sevennet", device="cpu"),
                             RelaxConfig(fmax=0.02, max_steps=200))
    assert result.converged, result.error
    assert 5.55 < result.structure.lattice.a * np.sqrt(2) < 5.80  # PBE-like rocksalt NaCl
    assert result.calculator_version.startswith("sevenn ") and result.calculator_version.endswith("7net-0")
