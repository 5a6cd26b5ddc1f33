"""Relax and score stage flows on tiny EMT run folders (real Prefect, real EMT, real pymatgen hulls)."""

import json

import numpy as np
import pandas as pd
import pytest
from prefect.artifacts import Artifact
from pymatgen.core import Composition, Lattice, Structure

from dft.batch import read_relaxed
from flows.params import RelaxParams, RunParams, ScoreParams
from flows.stages import relax_flow, score_flow
from tests.flows.helpers import make_run
from unimat_core.run_layout import MissingStageOutput, RunLayout

EMT = RelaxParams(calculator="emt", chunk_size=2, max_steps=200, time_limit_s=30)


def test_relax_without_generated_structures_fails_fast_naming_generate(tmp_path):
    with pytest.raises(MissingStageOutput, match=r"generate/part-\*\.parquet does not exist.*`generate` stage"):
        relax_flow(RunParams(campaign="nothing", results_root=str(tmp_path)), EMT)
    assert not (tmp_path / "nothing" / "relax").exists()


def test_relax_flow_relaxes_valid_rows_in_chunks_and_resumes(tmp_path):
    layout = make_run(tmp_path, "r", n_candidates=5)
    run = RunParams(campaign="r", results_root=str(tmp_path))
    first = relax_flow(run, EMT)
    assert first["n_relaxed"] == 5 and first["n_converged"] == 5 and first["n_chunks"] == 3
    frame = read_relaxed(layout.relaxed)
    assert sorted(frame["id"]) == [f"r-gen-{i:05d}" for i in range(5)]  # the invalid decode is not relaxed
    parts = sorted(layout.relaxed.glob("part-*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]

    second = relax_flow(run, EMT)
    assert second["n_done_before"] == 5 and second["n_relaxed_now"] == 0 and second["n_chunks"] == 0
    assert [p.stat().st_mtime_ns for p in sorted(layout.relaxed.glob("part-*.parquet"))] == mtimes
    assert Artifact.get("r-relax") is not None


def test_score_with_a_user_reference_gives_hand_checked_energies(tmp_path):
    layout = make_run(tmp_path, "s", n_candidates=2)  # s-gen-00000: Cu4, s-gen-00001: Cu3Au
    run = RunParams(campaign="s", results_root=str(tmp_path))
    relax_flow(run, EMT)
    reference = tmp_path / "hull.csv"
    pd.DataFrame({"id": ["cu", "au"], "composition": ["Cu", "Au"], "energy_per_atom": [-0.1, 0.2],
                  "source": "hand", "energy_scale": "own:emt"}).to_csv(reference, index=False)
    result = score_flow(run, EMT, ScoreParams(reference=str(reference)))
    assert result["reference"]["n_entries"] == 2

    energies = read_relaxed(layout.relaxed).set_index("id")["energy_per_atom"]
    scores = pd.read_parquet(layout.scores).set_index("id")
    cu, cu3au = energies["s-gen-00000"], energies["s-gen-00001"]
    assert scores.loc["s-gen-00000", "decomposition_energy"] == pytest.approx(cu + 0.1)
    assert scores.loc["s-gen-00001", "formation_energy_per_atom"] == pytest.approx(cu3au - (0.75 * -0.1 + 0.25 * 0.2))
    for sid in scores.index:
        d = scores.loc[sid, "decomposition_energy"]
        assert scores.loc[sid, "e_above_hull"] == pytest.approx(max(d, 0.0))
        assert scores.loc[sid, "stable"] == (d <= 1e-8)
    sun = json.loads((layout.stage_dir("score") / "sun.json").read_text())
    assert sun["n_candidates"] == 2 and sun["n_stable"] == int(scores["stable"].sum())
    assert not sun["uniqueness_known"]
    table = Artifact.get("s-top-candidates")
    assert table is not None and "formation_energy_per_atom" in str(table.data)
    assert (scores["energy_scale"] == "own:emt").all() and (scores["correction_per_atom"] == 0).all()


def test_score_refuses_a_reference_on_another_energy_scale(tmp_path, monkeypatch):
    """EMT energies cannot face MP-corrected ones: refused before any score is written (and before asking MP)."""
    make_run(tmp_path, "x", n_candidates=1)
    run = RunParams(campaign="x", results_root=str(tmp_path))
    relax_flow(run, EMT)
    reference = tmp_path / "mp_like.csv"
    pd.DataFrame({"id": ["cu"], "composition": ["Cu"], "energy_per_atom": [-4.1], "source": "MP",
                  "energy_scale": "mp2020"}).to_csv(reference, index=False)
    with pytest.raises(ValueError, match=r"candidates on energy scale own:emt and reference on mp2020"):
        score_flow(run, EMT, ScoreParams(reference=str(reference)))
    monkeypatch.delenv("MP_API_KEY", raising=False)  # the refusal comes first, not "no API key"
    with pytest.raises(ValueError, match=r"candidates on energy scale own:emt and reference on mp2020"):
        score_flow(run, EMT, ScoreParams(reference="mp"))
    assert not RunLayout(tmp_path, "x").scores.exists()


@pytest.mark.slow
def test_offline_reference_uses_the_candidates_calculator_and_is_reused(tmp_path):
    layout = make_run(tmp_path, "o", n_candidates=4)
    run = RunParams(campaign="o", results_root=str(tmp_path))
    relax_flow(run, EMT)
    result = score_flow(run, EMT, ScoreParams(reference_size=3, elements_per_task=3))
    reference = pd.read_parquet(layout.reference)
    assert set(reference["source"]) == {"relaxed:emt"}
    assert set(reference["energy_scale"]) == {"own:emt"}
    (cache,) = (tmp_path / "_reference_cache").iterdir()  # one folder: EMT with these relaxation settings
    systems = {p.stem for p in (cache / "systems").glob("*.parquet")}
    # candidates Cu4, Cu3Au, Ni3Al, AgAu (+ dataset crystals inside those systems): elements and their pairs
    assert {"Cu", "Au", "Al", "Ni", "Ag", "Au-Cu", "Al-Ni", "Ag-Au"} <= systems
    assert not {"Pt", "Pd", "Pd-Pt"} & systems  # no candidate there
    kinds = json.loads((layout.stage_dir("score") / "reference.json").read_text())["sources"]
    assert kinds["prototype"] > 0 and kinds["elemental"] > 0 and kinds["dataset"] > 0
    assert result["reference"]["n_dataset_relaxed"] == 3
    assert result["reference"]["n_prototypes_relaxed"] > 0
    scores = pd.read_parquet(layout.scores)
    assert np.isfinite(scores["decomposition_energy"]).all() and (scores["missing_elements"] == "").all()
    # every elemental reference sits on the hull it defines: pure-element candidates are at or above it
    pure = scores[scores["composition"].str.fullmatch(r"[A-Z][a-z]?\d*")]
    assert (pure["decomposition_energy"] >= -1e-6).all()

    again = score_flow(run, EMT, ScoreParams(reference_size=3, elements_per_task=3))
    assert again["reference"]["n_dataset_relaxed"] == 0  # dataset subset already relaxed: resumed
    assert again["reference"]["n_prototypes_relaxed"] == 0  # every system from the cache

    # another campaign with the same calculator and settings reuses the cache; other settings do not
    make_run(tmp_path, "o2", n_candidates=2)
    other = RunParams(campaign="o2", results_root=str(tmp_path))
    relax_flow(other, EMT)
    reuse = score_flow(other, EMT, ScoreParams(reference_size=0))
    assert reuse["reference"]["n_prototypes_relaxed"] == 0
    stricter = EMT.model_copy(update={"fmax": 0.02})
    redo = RunParams(campaign="o2", results_root=str(tmp_path), overwrite=("relax",))  # other settings: redo on purpose
    relax_flow(redo, stricter)
    fresh = score_flow(other, stricter, ScoreParams(reference_size=0))
    assert fresh["reference"]["n_prototypes_relaxed"] > 0
    assert len(list((tmp_path / "_reference_cache").iterdir())) == 2


def test_score_rejects_a_reference_from_another_calculator(tmp_path):
    layout = make_run(tmp_path, "m", n_candidates=1)
    run = RunParams(campaign="m", results_root=str(tmp_path))
    relax_flow(run, EMT)
    score_flow(run, EMT, ScoreParams(reference_size=1))
    before = RunLayout(tmp_path, "m").scores.stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"relaxed with \['emt'\].*'chgnet'"):
        score_flow(run, EMT.model_copy(update={"calculator": "chgnet"}), ScoreParams(reference_size=1))
    assert layout.scores.stat().st_mtime_ns == before
    assert [p.name.split("-")[0] for p in (tmp_path / "_reference_cache").iterdir()] == ["emt"]


def test_a_raw_gga_calculator_is_corrected_on_both_sides_of_its_offline_hull(tmp_path, monkeypatch):
    """EMT registered as a raw-GGA calculator (standing in for SevenNet-0, whose weights are slow here): the score
    stage applies MP2020 to the candidates and to every reference entry. Rock-salt NiO: GGA+U with U(Ni) = 6.2,
    so each entry gets (-0.687 (oxide) - 2.541 (Ni in an oxide)) / 2 = -1.614 eV/atom; the elements get nothing."""
    from ase.calculators.emt import EMT as AseEMT

    from dft import calculators
    from tests.flows.helpers import write_fetched, write_generated

    monkeypatch.setattr(calculators, "_FACTORIES", dict(calculators._FACTORIES))
    monkeypatch.setattr(calculators, "_SCALES", dict(calculators._SCALES))
    calculators.register_calculator("emt-as-gga", lambda config: calculators.BuiltCalculator(
        AseEMT(), "emt-as-gga", "ase EMT standing in for a raw-GGA potential"), scale="gga_raw")
    layout = RunLayout(tmp_path, "g")
    write_fetched(layout, n=1)  # one Cu4 crystal: outside Ni-O, so no dataset structure joins the hull
    nio = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.17), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_generated(layout, [nio], n_invalid=0, prefix="g-gen")
    run = RunParams(campaign="g", results_root=str(tmp_path))
    raw_gga = EMT.model_copy(update={"calculator": "emt-as-gga"})
    relax_flow(run, raw_gga)
    score_flow(run, raw_gga, ScoreParams(reference_size=0))

    info = json.loads((layout.stage_dir("score") / "reference.json").read_text())
    assert (info["source_scale"], info["hull_scale"]) == ("gga_raw", "mp2020")
    assert info["note"].startswith("MP2020 corrections applied to the candidates and reference")
    reference = pd.read_parquet(layout.reference)
    per_formula = reference.groupby(reference["composition"].map(lambda c: Composition(c).reduced_formula))
    corrections = per_formula["correction_per_atom"].first()
    assert corrections["NiO"] == pytest.approx((-0.687 - 2.541) / 2) and corrections["Ni"] == corrections["O2"] == 0
    assert (reference["energy_per_atom"] == reference["raw_energy_per_atom"] + reference["correction_per_atom"]).all()
    scores = pd.read_parquet(layout.scores).iloc[0]
    assert scores["energy_scale"] == "mp2020" and scores["correction_per_atom"] == pytest.approx(-1.614)
    assert scores["energy_per_atom"] == pytest.approx(scores["raw_energy_per_atom"] - 1.614)
