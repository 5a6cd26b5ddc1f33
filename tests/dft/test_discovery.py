"""Discovery benchmark helpers without Prefect: target drawing from the bundled perov_5 and carbon_24 data, reference
phases, relaxation planning."""

from __future__ import annotations

import pandas as pd
import pytest
from pymatgen.core import Composition

from dft.discovery_benchmark import plan_relaxation, relaxation_sets, select_targets
from dft.discovery_benchmark.benchmark import pick_candidates, usable_sample
from dft.discovery_benchmark.reference_phases import reference_table
from unimat_core.datasets.bundled import bundled_csv_paths
from dft.discovery_benchmark.random_search import random_candidates
from unimat_core.structure_table import records_to_frame, structure_from_json, structure_to_json, write_structures


def test_drawn_targets_are_unseen_perov5_test_compositions_with_their_known_structures():
    targets, known = select_targets("perov_5", (), 4, seed=3, unseen_only=True)
    assert len(targets) == 4 and len(set(targets)) == 4
    again, _ = select_targets("perov_5", (), 4, seed=3, unseen_only=True)
    other, _ = select_targets("perov_5", (), 4, seed=4, unseen_only=True)
    assert again == targets and other != targets
    val = pd.read_csv(bundled_csv_paths("perov_5")["val"], usecols=["formula"])["formula"]
    seen = {Composition(f).reduced_formula for f in val}
    for target in targets:
        assert " " not in target and Composition(target).num_atoms == 5  # full perov_5 cell
        assert Composition(target).reduced_formula not in seen
        rows = known[known["target_formula"] == target]
        assert len(rows) >= 1 and (rows["split"] == "test").all() and rows["id"].str.startswith("known-").all()
        for text in rows["structure"]:
            assert structure_from_json(text).composition.reduced_formula == Composition(target).reduced_formula


def test_explicit_targets_need_a_known_structure():
    targets, known = select_targets("perov_5", ("Ti1Os1N1O1F1",), 1, seed=0, unseen_only=True)
    assert targets == ["Ti1Os1N1O1F1"] and len(known) >= 1
    with pytest.raises(ValueError, match=r"no known structure for \['Cu3Au1'\]"):
        select_targets("perov_5", ("Ti1Os1N1O1F1", "Cu3Au"), 1, seed=0, unseen_only=True)
    with pytest.raises(FileNotFoundError, match="neither a bundled dataset"):
        select_targets("no/such/file.parquet", (), 1, seed=0, unseen_only=True)


def test_relaxation_plan_skips_finished_ids_and_numbers_new_chunks_after_old_ones(tmp_path, nacl):
    known = records_to_frame([nacl], ["known-nacl"], source="hand")
    known["target_formula"] = "Na2Cl2"
    write_structures(known, tmp_path / "known" / "structures.parquet")
    write_structures(random_candidates(["Na2Cl2"], 5, seed=0), tmp_path / "random" / "candidates.parquet")
    unimat = random_candidates(["Na2Cl2"], 2, seed=1, id_prefix="unimat")
    unimat.loc[1, ["structure", "valid", "reason"]] = [None, False, "degenerate lattice"]  # an invalid decode
    write_structures(unimat, tmp_path / "unimat" / "candidates.parquet")

    plan = plan_relaxation(tmp_path, chunk_size=2)
    by_set = {name: [c for c in plan if c["set"] == name] for name in ("known", "unimat", "random")}
    assert [c["ids"] for c in by_set["unimat"]] == [["unimat-Na2Cl2-000"]]  # the invalid decode is not relaxed
    assert [len(c["ids"]) for c in by_set["random"]] == [2, 2, 1]
    assert [c["out_dir"].rsplit("/", 1)[1] for c in by_set["random"]] == ["chunk-00000", "chunk-00001", "chunk-00002"]

    # chunk 1 finished before a kill: a new plan relaxes the rest in fresh chunk folders
    done = by_set["random"][1]
    write_structures(records_to_frame([nacl, nacl], done["ids"], source="relax"), f"{done['out_dir']}/part-00000.parquet")
    replan = [c for c in plan_relaxation(tmp_path, chunk_size=2) if c["set"] == "random"]
    assert sorted(i for c in replan for i in c["ids"]) == sorted(set(random_candidates(["Na2Cl2"], 5)["id"]) - set(done["ids"]))
    assert [c["out_dir"].rsplit("/", 1)[1] for c in replan] == ["chunk-00002", "chunk-00003"]
    with pytest.raises(ValueError, match="chunk_size"):
        plan_relaxation(tmp_path, chunk_size=0)


def test_carbon_24_targets_are_cells_whose_known_structures_share_that_cell():
    targets, known = select_targets("carbon_24", (), 3, seed=0, unseen_only=False, by_cell=True)
    assert len(set(targets)) == 3 and all(Composition(t).reduced_formula == "C" for t in targets)
    for target in targets:
        rows = known[known["target_formula"] == target]
        n = int(Composition(target).num_atoms)
        assert 6 <= n <= 24 and len(rows) >= 1 and (rows["n_sites"] == n).all() and (rows["split"] == "test").all()
    explicit, known = select_targets("carbon_24", ("C24",), 1, seed=0, unseen_only=False, by_cell=True)
    assert explicit == ["C24"] and len(known) == 10  # the test split holds 10 cells of 24 carbon atoms
    with pytest.raises(ValueError, match=r"no known structure for \['C7'\] in carbon_24 with that cell"):
        select_targets("carbon_24", ("C6", "C7"), 2, seed=0, unseen_only=False, by_cell=True)
    # every carbon_24 cell formula is also in the val split the model was trained on
    with pytest.raises(ValueError, match="has 0 to draw from .*--include-seen"):
        select_targets("carbon_24", (), 3, seed=0, unseen_only=True, by_cell=True)


def test_reference_phases_of_carbon_are_diamond_and_graphite():
    table = reference_table(["C6", "C12"])
    assert table["id"].tolist() == ["reference-C-diamond", "reference-C-graphite"]
    assert table["n_sites"].tolist() == [2, 4] and (table["element"] == "C").all()
    diamond = structure_from_json(table["structure"][0])
    assert diamond.volume / len(diamond) == pytest.approx(3.567**3 / 8)
    assert sorted(reference_table(["Cu4"])["phase"]) == ["bcc", "diamond", "fcc", "hcp", "sc"]
    with pytest.raises(ValueError, match="target Cu3Au1 has 2 elements: reference 'elemental' needs one-element"):
        reference_table(["C6", "Cu3Au1"])


def test_elemental_benchmark_relaxes_reference_phases_instead_of_known_structures(tmp_path, nacl):
    known = records_to_frame([nacl], ["known-nacl"], source="hand")
    known["target_formula"] = "Na2Cl2"
    write_structures(known, tmp_path / "known" / "structures.parquet")
    write_structures(reference_table(["C6"]), tmp_path / "reference" / "structures.parquet")
    write_structures(random_candidates(["C6"], 2, seed=0), tmp_path / "random" / "candidates.parquet")
    write_structures(random_candidates(["C6"], 1, seed=0, id_prefix="unimat"), tmp_path / "unimat" / "candidates.parquet")
    plan = plan_relaxation(tmp_path, chunk_size=5, sets=relaxation_sets("elemental"))
    assert {c["set"]: c["ids"] for c in plan} == {"reference": ["reference-C-diamond", "reference-C-graphite"],
                                                  "unimat": ["unimat-C6-000"], "random": ["random-C6-000", "random-C6-001"]}
    assert relaxation_sets("known") == ("known", "unimat", "random")


def test_unimat_proposals_are_the_first_k_usable_samples_in_sampling_order(nacl):
    good = {"valid": True, "reason": "", "formula": "Na2 Cl2", "target_formula": "Na2Cl2",
            "structure": structure_to_json(nacl)}
    squeezed = nacl.copy()
    squeezed.translate_sites([0], squeezed[1].coords - squeezed[0].coords + 0.1, frac_coords=False)
    samples = [{**good, "valid": False, "reason": "degenerate lattice", "structure": None},
               {**good, "tag": 1},
               {**good, "structure": structure_to_json(squeezed)},
               {**good, "formula": "Na1 Cl2"},
               {**good, "tag": 4},
               {**good, "tag": 5}]
    picked = pick_candidates(samples, 2)
    assert [r["order"] for r in picked] == [1, 4] and all(r["usable"] for r in picked)
    reasons = [usable_sample(s)[1] for s in samples[:4]]
    assert reasons[0] == "degenerate lattice" and reasons[1] == ""
    assert reasons[2].startswith("structurally invalid: atoms 0.17") and "not the target" in reasons[3]
    # fewer usable samples than K: topped up with failed trials, still in sampling order
    topped = pick_candidates(samples[:4], 3)
    assert [(r["order"], r["usable"]) for r in topped] == [(0, False), (1, True), (2, False)]
