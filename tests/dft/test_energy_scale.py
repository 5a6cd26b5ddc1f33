"""Energy scales and MP2020 corrections on hand-checkable entries (real pymatgen compatibility, no relaxation).

MP2020 constants used in the hand calculations (pymatgen's MP2020Compatibility.yaml): oxide -0.687 eV per O,
peroxide -0.465 per O, Cl -0.614 per Cl, Co in an oxide (GGA+U, U = 3.32 eV) -1.638 per Co.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure

from dft import calculators
from dft.calculators import CalculatorConfig, energy_scale, register_calculator
from dft.energy_scale import (
    MP2020_SCALE,
    EnergyScale,
    ScaleMismatch,
    mp2020_corrections,
    mp_parameters,
    on_hull_scale,
    plan_scales,
)
from dft.hull import make_reference, score_candidates
from unimat_core.structure_table import structure_to_json

OXIDE, PEROXIDE, CL, CO_U = -0.687, -0.465, -0.614, -1.638
RAW, OWN_EMT = EnergyScale("gga_raw"), EnergyScale("own", "emt")


def test_every_shipped_calculator_declares_its_scale(monkeypatch):
    assert energy_scale(CalculatorConfig("chgnet")) == MP2020_SCALE  # trained on MPtrj's corrected energies
    assert energy_scale(CalculatorConfig("sevennet")) == RAW  # trained on MPtrj's raw PBE/PBE+U energies
    assert energy_scale(CalculatorConfig("sevennet", model="7net-l3i5")) == RAW
    assert energy_scale(CalculatorConfig("emt")) == OWN_EMT
    gpaw = energy_scale(CalculatorConfig("gpaw", options={"ecut": 400.0}))
    assert gpaw.kind == "own" and '"ecut": 400.0' in gpaw.label and '"xc": "PBE"' in gpaw.label  # settings in the label
    assert gpaw != energy_scale(CalculatorConfig("gpaw"))  # other settings, another scale
    # a model nobody has checked is on its own scale until declared
    assert energy_scale(CalculatorConfig("sevennet", model="7net-mf-ompa")).kind == "own"
    monkeypatch.setattr(calculators, "_FACTORIES", dict(calculators._FACTORIES))  # registration stays in this test
    monkeypatch.setattr(calculators, "_SCALES", dict(calculators._SCALES))
    register_calculator("site-potential", lambda config: None)
    assert energy_scale(CalculatorConfig("site-potential")) == EnergyScale("own", "site-potential")


@pytest.mark.parametrize("candidates, reference, fix_c, fix_r, hull", [
    (MP2020_SCALE, MP2020_SCALE, False, False, MP2020_SCALE),  # CHGNet vs MP: nothing (correcting again double-counts)
    (RAW, MP2020_SCALE, True, False, MP2020_SCALE),  # SevenNet vs MP: the candidates are corrected
    (MP2020_SCALE, RAW, False, True, MP2020_SCALE),  # CHGNet vs a raw-GGA table: the table is corrected
    (RAW, RAW, True, True, MP2020_SCALE),  # SevenNet vs its own hull: GGA/GGA+U mixing needs MP2020 on both
    (OWN_EMT, OWN_EMT, False, False, OWN_EMT),  # EMT vs EMT: nothing
])
def test_plan_puts_both_sides_on_one_scale(candidates, reference, fix_c, fix_r, hull):
    plan = plan_scales(candidates, reference)
    assert (plan.correct_candidates, plan.correct_reference, plan.hull_scale) == (fix_c, fix_r, hull)


@pytest.mark.parametrize("candidates, reference", [
    (OWN_EMT, MP2020_SCALE), (OWN_EMT, RAW), (MP2020_SCALE, OWN_EMT),
    (OWN_EMT, EnergyScale("own", "gpaw")), (EnergyScale("own", "sevennet 7net-mf-ompa"), MP2020_SCALE),
])
def test_plan_refuses_scales_no_correction_relates(candidates, reference):
    with pytest.raises(ScaleMismatch, match=f"candidates on energy scale {candidates} and reference on {reference}"):
        plan_scales(candidates, reference)


def test_scale_text_round_trips_and_bad_text_is_refused():
    for scale in (MP2020_SCALE, RAW, OWN_EMT, EnergyScale("own", 'gpaw {"ecut": 300}')):
        assert EnergyScale.parse(str(scale)) == scale
    with pytest.raises(ScaleMismatch, match="not 'mp2020'"):
        EnergyScale.parse("corrected")
    with pytest.raises(ScaleMismatch, match="needs a label"):
        EnergyScale("own")


def test_mp_rules_choose_gga_or_gga_u():
    assert mp_parameters(Composition("CoO")) == {"run_type": "GGA+U", "hubbards": {"Co": 3.32}, "is_hubbard": True}
    assert mp_parameters(Composition("NbCoO3"))["hubbards"] == {"Co": 3.32}  # Nb takes no U in MP's set
    assert mp_parameters(Composition("CoF2"))["hubbards"] == {"Co": 3.32}
    assert mp_parameters(Composition("CoN"))["run_type"] == "GGA"  # U only when O or F is the anion
    assert mp_parameters(Composition("Co"))["run_type"] == "GGA"
    assert mp_parameters(Composition("MgO"))["run_type"] == "GGA"


def _rocksalt(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_corrections_match_the_hand_values():
    formulas = ["MgO", "NaCl", "Al2O3", "CoO", "NbCoO3", "Co", "O2", "Li2O2"]
    corrections, errors = mp2020_corrections(formulas, [-6.0] * len(formulas))
    assert errors == {}
    expected = [OXIDE / 2, CL / 2, 3 * OXIDE / 5, (OXIDE + CO_U) / 2, (3 * OXIDE + CO_U) / 5, 0.0, 0.0,
                2 * PEROXIDE / 4]  # elements carry none; Li2O2 is a known peroxide
    np.testing.assert_allclose(corrections, expected, atol=1e-9)
    # with a structure (ComputedStructureEntry) the oxide type comes from O-O distances: rocksalt MgO is an oxide
    with_structure, _ = mp2020_corrections(["MgO"], [-6.0], [_rocksalt("Mg", "O", 4.21)], ["mgo"])
    assert with_structure[0] == pytest.approx(OXIDE / 2)


def test_on_hull_scale_keeps_the_raw_energy_and_the_correction():
    frame = pd.DataFrame({"id": ["mgo", "mg", "nan"], "composition": ["MgO", "Mg", "MgO"],
                          "energy_per_atom": [-5.9775, -1.6044, np.nan],
                          "structure": [structure_to_json(_rocksalt("Mg", "O", 4.21)), None, None]})
    out, errors = on_hull_scale(frame, correct=True)
    assert errors == {}
    assert out["raw_energy_per_atom"].tolist()[:2] == [-5.9775, -1.6044]
    assert out["energy_per_atom"].iloc[0] == pytest.approx(-5.9775 + OXIDE / 2)
    assert out["correction_per_atom"].iloc[1] == 0.0 and np.isnan(out["energy_per_atom"].iloc[2])
    untouched, _ = on_hull_scale(frame, correct=False)
    assert untouched["energy_per_atom"].iloc[0] == -5.9775 and (untouched["correction_per_atom"] == 0).all()


def test_decomposition_energy_of_raw_gga_entries_by_hand():
    """A raw-GGA Co-O hull (Co, O2, CoO) and a raw Co3O4 candidate, as SevenNet-0 would give them.

    Raw (eV/atom): Co -7.0, O2 -4.9, CoO -6.0, Co3O4 -6.05. MP2020: CoO += (-0.687 - 1.638)/2 = -1.1625 -> -7.1625;
    Co3O4 += (4 * -0.687 + 3 * -1.638)/7 = -1.094571 -> -7.144571. The hull at x_O = 4/7 is 6/7 CoO + 1/7 O2
    = -6.139286 - 0.7 = -6.839286, so the decomposition energy is -0.305286 eV/atom. Uncorrected it would be
    -0.207143 (formation -0.25 vs hull 6/7 * -0.05): the GGA/GGA+U mixing changes the answer by 0.1 eV/atom.
    """
    reference = make_reference(["co", "o2", "coo"], ["Co", "O2", "CoO"], [-7.0, -4.9, -6.0], "hand")
    candidate = pd.DataFrame({"id": ["co3o4"], "composition": ["Co3O4"], "energy_per_atom": [-6.05]})
    plan = plan_scales(RAW, RAW)
    ref, _ = on_hull_scale(reference, plan.correct_reference)
    cand, _ = on_hull_scale(candidate, plan.correct_candidates)
    scored = score_candidates(cand, ref).set_index("id")
    assert scored.loc["co3o4", "decomposition_energy"] == pytest.approx(-0.305286, abs=1e-6)
    assert scored.loc["co3o4", "formation_energy_per_atom"] == pytest.approx(-7.144571 - (3 * -7.0 + 4 * -4.9) / 7,
                                                                             abs=1e-6)
    raw = score_candidates(candidate, reference).set_index("id")
    assert raw.loc["co3o4", "decomposition_energy"] == pytest.approx(-0.207143, abs=1e-6)

    # a raw candidate facing MP-corrected entries: only the candidate moves (MP's CoO is -7.1625 already)
    mp = make_reference(["co", "o2", "coo"], ["Co", "O2", "CoO"], [-7.0, -4.9, -7.1625], "mp")
    plan = plan_scales(RAW, MP2020_SCALE)
    cand, _ = on_hull_scale(candidate, plan.correct_candidates)
    mp_scored = score_candidates(cand, on_hull_scale(mp, plan.correct_reference)[0]).set_index("id")
    assert mp_scored.loc["co3o4", "decomposition_energy"] == pytest.approx(-0.305286, abs=1e-6)
