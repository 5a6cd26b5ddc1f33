"""Real DFT: GPAW PBE plane waves in Debian's system Python (see dft/gpaw_runner.py for why)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.calculators import CalculatorConfig, CalculatorUnavailable
from dft.gpaw_runner import GpawConfig, check_gpaw, relax_gpaw
from dft.relax import RelaxConfig, relax_structure


def silicon() -> Structure:
    """Diamond Si, 2-atom primitive cell at the experimental a = 5.43 A."""
    return Structure(Lattice.cubic(5.43), ["Si"] * 8,
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                      [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]]
                     ).get_primitive_structure()


@pytest.mark.slow
def test_gpaw_pbe_single_point_on_two_atom_si():
    si = silicon()
    assert len(si) == 2
    result = relax_structure(si, CalculatorConfig("gpaw"), RelaxConfig(max_steps=0, relax_cell=False,
                                                                      time_limit_s=300))
    assert result.ok, result.error
    assert result.calculator == "gpaw" and result.calculator_version.startswith("gpaw ")
    # GPAW energies are relative to its isolated-atom PAW references: bulk Si binds, so E < 0,
    # a few eV per atom (PBE cohesive energy ~4.6 eV/atom, minus the spin-polarisation of the atom).
    assert -6.0 < result.energy_per_atom < -1.5
    assert result.max_force < 1e-2  # every atom on an inversion centre: forces vanish by symmetry
    assert np.allclose(result.structure.lattice.matrix, si.lattice.matrix)


@pytest.mark.slow
def test_gpaw_time_limit_kills_the_process():
    result = relax_gpaw(silicon(), GpawConfig(), RelaxConfig(max_steps=0, time_limit_s=0.2))
    assert not result.ok and result.error.startswith("time limit: GPAW process killed")


def test_missing_system_python_is_a_clear_error():
    with pytest.raises(CalculatorUnavailable, match="not found"):
        check_gpaw(GpawConfig(python="/nonexistent/python3"))
    result = relax_gpaw(silicon(), GpawConfig(python="/nonexistent/python3"), RelaxConfig())
    assert result.error.startswith("CalculatorUnavailable") and np.isnan(result.energy)
