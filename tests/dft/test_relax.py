"""Single-structure relaxation with real calculators (EMT, CHGNet) and recorded failures."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.calculators import CalculatorConfig, build_calculator
from dft.relax import RelaxConfig, RelaxResult, displacement_rmsd, relax_structure

# EMT's fcc Cu equilibrium: a = 3.590 A (ASE's EMT parameters)
EMT_CU_A = 3.590


def fcc_cu(a: float = 3.8) -> Structure:
    return Structure(Lattice.cubic(a), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_emt_relaxes_rattled_cu_back_to_fcc():
    rattled = fcc_cu(3.75)
    rattled.perturb(0.1, min_distance=0.05)
    result = relax_structure(rattled, CalculatorConfig("emt"), RelaxConfig(fmax=0.005, max_steps=300))
    assert result.ok and result.converged, result.error
    assert result.max_force <= 0.005
    assert result.steps > 0
    assert result.rmsd > 0.01  # it moved atoms back
    relaxed = result.structure
    assert np.allclose(relaxed.lattice.abc, EMT_CU_A, atol=0.01)
    assert np.allclose(relaxed.lattice.angles, 90, atol=0.5)
    from pymatgen.analysis.structure_matcher import StructureMatcher
    assert StructureMatcher().fit(relaxed, fcc_cu(EMT_CU_A))
    assert result.energy_per_atom == pytest.approx(result.energy / 4)
    assert result.calculator == "emt" and "EMT" in result.calculator_version
    assert RelaxResult.from_dict(result.as_dict()).properties() == result.properties()


def test_chgnet_relaxes_perturbed_nacl_to_equilibrium():
    """CHGNet 0.3.0's rocksalt NaCl lattice is ~5.69 A (PBE-like, exp. 5.64); start 4% strained."""
    pytest.importorskip("chgnet", reason="needs the `mlip` extra (make EXTRAS must include mlip)")
    primitive = Structure(Lattice.from_parameters(4.15, 4.15, 4.15, 60, 60, 60), ["Na", "Cl"],
                          [[0, 0, 0], [0.52, 0.49, 0.5]])
    result = relax_structure(primitive, CalculatorConfig("chgnet", device="cpu"),
                             RelaxConfig(fmax=0.02, max_steps=200))
    assert result.converged, result.error
    conventional_a = result.structure.lattice.a * np.sqrt(2)
    assert 5.60 < conventional_a < 5.75
    assert np.allclose(result.structure.lattice.angles, 60, atol=1.0)
    assert -3.8 < result.energy_per_atom < -3.5
    assert result.calculator_version.endswith("model 0.3.0")


def test_calculator_crash_is_recorded():
    """EMT has no Na/Cl parameters: its calculate() raises, the result carries the reason."""
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    result = relax_structure(nacl, CalculatorConfig("emt"))
    assert not result.ok and not result.converged
    assert "NotImplementedError" in result.error and "Na" in result.error
    assert result.structure == nacl  # input kept
    assert np.isnan(result.energy)


def test_non_converging_and_time_limit_are_recorded():
    rattled = fcc_cu(3.9)
    rattled.perturb(0.15)
    built = build_calculator(CalculatorConfig("emt"))
    short = relax_structure(rattled, built, RelaxConfig(max_steps=2, fmax=0.001))
    assert not short.converged and short.error.startswith("not converged")
    assert short.steps == 2 and np.isfinite(short.energy)
    timed = relax_structure(rattled, built, RelaxConfig(max_steps=10_000, fmax=1e-6, time_limit_s=0.0))
    assert not timed.converged and timed.error.startswith("time limit")
    assert timed.steps <= 2


def test_displacement_rmsd_removes_translation_and_wraps():
    s = fcc_cu(4.0)
    shifted = s.copy()
    shifted.translate_sites(range(4), [0.99, 0.0, 0.0])  # wraps across the cell boundary
    assert displacement_rmsd(s, shifted) == pytest.approx(0.0, abs=1e-9)
    moved = s.copy()
    moved.translate_sites([0], [0.1, 0, 0], frac_coords=False)
    # one atom by 0.1 A, centroid removed: sqrt((0.075^2 + 3 * 0.025^2) / 4)
    assert displacement_rmsd(s, moved) == pytest.approx(np.sqrt((0.075**2 + 3 * 0.025**2) / 4))
