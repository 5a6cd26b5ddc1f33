"""Hull scoring on a hand-built Li-O system whose numbers can be checked on paper.

Reference (eV/atom): Li 0 (-1.9 absolute), O 0 (-4.9 absolute), Li2O formation -2.0.
Li2O: E = (2*-1.9 + -4.9)/3 - 2.0 = -2.9 - 2.0 = -4.9 eV/atom.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from dft.energy_scale import EnergyScale, ScaleMismatch
from dft.hull import (
    HullError,
    make_reference,
    read_reference,
    reference_from_relaxed,
    reference_scale,
    score_candidates,
    sun_summary,
    write_reference,
)

LI, O = -1.9, -4.9


@pytest.fixture
def li_o_reference() -> pd.DataFrame:
    return make_reference(["li", "o2", "li2o"], ["Li", "O2", "Li2O"], [LI, O, (2 * LI + O) / 3 - 2.0], "hand")


def test_li_o_formation_and_decomposition(li_o_reference):
    # Li2O2 (x_O = 1/2): the hull there is the Li2O-O tie line: at x=1/2, 3/4 Li2O + 1/4 O (by atoms)
    # hull formation energy = 3/4 * -2.0 = -1.5 eV/atom.
    # Candidate A: Li2O2 with formation -1.6 -> decomposition -0.1 (new hull phase, stable)
    # Candidate B: LiO2 (x_O = 2/3): hull = (1/3)/(2/3) ... Li2O (x=1/3) to O (x=1): weight of Li2O
    # = (1 - 2/3)/(1 - 1/3) = 1/2 -> hull formation -1.0; candidate formation -0.95 -> +0.05 (metastable)
    # Candidate C: Li3O (x=1/4) between Li and Li2O: weight Li2O = (1/4)/(1/3) = 3/4 -> hull -1.5;
    # candidate formation -1.2 -> +0.3 (unstable)
    def absolute(formula, formation):
        comp = Composition(formula)
        x = comp.get_atomic_fraction("O")
        return (1 - x) * LI + x * O + formation

    candidates = pd.DataFrame({
        "id": ["A", "B", "C", "D"],
        "formula": ["Li2O2", "LiO2", "Li3O", "Li2O"],
        "energy_per_atom": [absolute("Li2O2", -1.6), absolute("LiO2", -0.95), absolute("Li3O", -1.2),
                            absolute("Li2O", -2.0)],
    })
    scores = score_candidates(candidates, li_o_reference).set_index("id")
    assert scores.loc["A", "formation_energy_per_atom"] == pytest.approx(-1.6)
    assert scores.loc["A", "decomposition_energy"] == pytest.approx(-0.1)
    assert scores.loc["A", "e_above_hull"] == 0.0
    assert scores.loc["B", "decomposition_energy"] == pytest.approx(0.05)
    assert scores.loc["B", "e_above_hull"] == pytest.approx(0.05)
    assert scores.loc["C", "decomposition_energy"] == pytest.approx(0.3)
    assert scores.loc["D", "decomposition_energy"] == pytest.approx(0.0, abs=1e-9)  # on the hull
    assert scores["stable"].to_dict() == {"A": True, "B": False, "C": False, "D": True}
    assert scores["metastable"].to_dict() == {"A": True, "B": True, "C": False, "D": True}
    assert (scores["missing_elements"] == "").all()

    # agrees with pymatgen's phase-separation energy computed independently
    entries = [PDEntry(Composition(c), e * Composition(c).num_atoms)
               for c, e in zip(li_o_reference["composition"], li_o_reference["energy_per_atom"])]
    diagram = PhaseDiagram(entries)
    for cid, formula in zip(candidates["id"], candidates["formula"]):
        comp = Composition(formula)
        epa = candidates.set_index("id").loc[cid, "energy_per_atom"]
        if cid != "D":
            expected = diagram.get_phase_separation_energy(PDEntry(comp, epa * comp.num_atoms))
            assert scores.loc[cid, "decomposition_energy"] == pytest.approx(expected)


def test_missing_elements_reported_not_raised(li_o_reference):
    candidates = pd.DataFrame({"id": ["x", "y", "z"], "formula": ["LiF", "Li2O", "NaCl"],
                               "energy_per_atom": [-3.0, -4.9, np.nan]})
    scores = score_candidates(candidates, li_o_reference).set_index("id")
    assert scores.loc["x", "missing_elements"] == "F"
    assert np.isnan(scores.loc["x", "decomposition_energy"])
    assert not scores.loc["x", "stable"]
    assert scores.loc["y", "stable"]
    assert scores.loc["z", "score_error"] == "no finite energy"


def test_parallel_matches_serial(li_o_reference):
    ref = pd.concat([li_o_reference, make_reference(["na", "nao"], ["Na", "Na2O"], [-1.3, -4.0], "hand")])
    candidates = pd.DataFrame({"id": [f"c{i}" for i in range(6)],
                               "formula": ["Li2O2", "NaO2", "Li3O", "Na2O2", "LiNaO", "Na"],
                               "energy_per_atom": [-4.0, -3.5, -3.0, -3.6, -4.1, -1.2]})
    serial = score_candidates(candidates, ref)
    parallel = score_candidates(candidates, ref, n_workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def test_reference_roundtrip_and_bad_input(tmp_path, li_o_reference):
    li_o_reference["energy_scale"] = "own:hand"
    path = write_reference(li_o_reference, tmp_path / "ref.parquet")
    pd.testing.assert_frame_equal(read_reference(path), li_o_reference)
    li_o_reference.to_csv(tmp_path / "ref.csv", index=False)
    pd.testing.assert_frame_equal(read_reference(tmp_path / "ref.csv"), li_o_reference)
    with pytest.raises(HullError, match="lacks column"):
        read_reference_frame = li_o_reference.drop(columns="source")
        write_reference(read_reference_frame, tmp_path / "bad.parquet")
    with pytest.raises(HullError, match="non-finite"):
        make_reference(["a"], ["Li"], [np.nan], "x")


def test_a_reference_file_must_declare_one_energy_scale(tmp_path, li_o_reference):
    li_o_reference.to_csv(tmp_path / "undeclared.csv", index=False)
    with pytest.raises(ScaleMismatch, match=r"undeclared.csv does not say which energy scale.*'own:emt'"):
        read_reference(tmp_path / "undeclared.csv")
    li_o_reference["energy_scale"] = ["mp2020", "mp2020", "gga_raw"]
    li_o_reference.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(ScaleMismatch, match=r"mixes energy scales \['gga_raw', 'mp2020'\]"):
        read_reference(tmp_path / "mixed.csv")
    li_o_reference["energy_scale"] = "gga_raw"
    assert reference_scale(li_o_reference) == EnergyScale("gga_raw")


def test_reference_from_relaxed_refuses_mixed_calculators():
    relaxed = pd.DataFrame({"id": ["a", "b"], "formula": ["Li1", "O2"], "energy_per_atom": [-1.9, -4.9],
                            "converged": [True, True], "calculator": ["chgnet", "chgnet"]})
    ref = reference_from_relaxed(relaxed)
    assert ref["source"].tolist() == ["relaxed:chgnet", "relaxed:chgnet"]
    relaxed.loc[1, "calculator"] = "sevennet"
    with pytest.raises(HullError, match="mixes calculators"):
        reference_from_relaxed(relaxed)


def test_sun_summary_counts():
    scores = pd.DataFrame({"stable": [True, True, False, True], "metastable": [True, True, True, True]})
    summary = sun_summary(scores, unique=pd.Series([True, False, True, True]),
                          novel=pd.Series([True, True, True, False]))
    assert (summary["n_stable"], summary["n_sun"]) == (3, 1)
    assert summary["sun_rate"] == 0.25
    assert sun_summary(scores, use_metastable=True)["n_sun"] == 4
    assert not sun_summary(scores)["novelty_known"]


def test_only_converged_relaxations_are_scored(li_o_reference):
    """Same energies, one relaxation stopped early: it gets no scores, no flags and says why."""
    e = (2 * LI + O) / 3 - 2.5  # 0.5 eV/atom below the Li2O on the hull
    candidates = pd.DataFrame({"id": ["ok", "stopped", "crashed"], "formula": ["Li2O", "Li2O", "Li2O"],
                               "energy_per_atom": [e, e, np.nan], "converged": [True, False, False],
                               "error": ["", "not converged: max force 5.3 eV/A > 0.05 after 150 steps",
                                         "RuntimeError: boom"]})
    scores = score_candidates(candidates, li_o_reference).set_index("id")
    assert scores.loc["ok", "stable"] and scores.loc["ok", "decomposition_energy"] == pytest.approx(-0.5)
    assert not scores.loc["stopped", "stable"] and not scores.loc["stopped", "metastable"]
    assert np.isnan(scores.loc["stopped", "decomposition_energy"])
    assert scores.loc["stopped", "score_error"] == ("relaxation not converged (not converged: max force 5.3 eV/A "
                                                    "> 0.05 after 150 steps)")
    assert scores.loc["crashed", "score_error"] == "no finite energy"


def test_sun_summary_never_counts_an_unconverged_candidate():
    scores = pd.DataFrame({"stable": [True, True, True], "metastable": [True, True, True],
                           "relax_converged": [True, False, True], "decomposition_energy": [-0.1, np.nan, 0.0]})
    summary = sun_summary(scores)
    assert (summary["n_stable"], summary["n_not_converged"], summary["n_scored"]) == (2, 1, 2)
    assert summary["stable_rate"] == pytest.approx(2 / 3)
