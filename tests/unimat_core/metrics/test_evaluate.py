from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt, table_of
from unimat_core.metrics import MetricsConfig, MetricsError, evaluate_structures, read_metrics, write_metrics
from unimat_core.metrics.evaluate import reason_kind
from unimat_core.structure_table import structure_to_json

ONE = MetricsConfig(n_workers=1)


def test_test_split_subset_against_itself_is_fully_covered_with_zero_emds(perov_test_subset):
    result = evaluate_structures(perov_test_subset, perov_test_subset, config=ONE)
    s = result.summary
    assert s["cov_recall"] == 1.0 and s["cov_precision"] == 1.0
    assert s["n_eval"] == s["n_valid"]  # fewer valid than n_eval: all of them are used
    assert s["struct_validity"] == 1.0
    assert s["amsd_recall"] == 0.0 and s["amcd_recall"] == 0.0
    # EMDs compare the valid generated subset with the whole reference: identical when all are valid
    valid = result.per_structure["valid"]
    if valid.all():
        assert s["emd_density"] == 0.0 and s["emd_n_elements"] == 0.0
    else:  # a test-split entry can fail SMACT; the EMD is then over the valid ones only
        assert not result.per_structure.loc[~valid, "valid_comp"].any()
    assert (s["struct_cutoff"], s["comp_cutoff"]) == (0.2, 4.0)


def test_all_valid_set_against_itself_has_emds_of_zero():
    table = table_of([rocksalt(), cubic_perovskite(), cubic_perovskite(species=("Ba", "Ti", "O"))])
    s = evaluate_structures(table, table, config=ONE).summary
    assert s["validity"] == 1.0
    assert s["emd_density"] == 0.0 and s["emd_n_elements"] == 0.0
    assert s["cov_recall"] == 1.0 and s["cov_precision"] == 1.0


def test_duplicates_give_the_right_uniqueness_and_training_gives_novelty_zero():
    training = table_of([rocksalt(), cubic_perovskite()], prefix="t")
    generated = table_of([rocksalt(), cubic_perovskite(), rocksalt(5.7), rocksalt(5.6), cubic_perovskite(3.9)])
    result = evaluate_structures(generated, training, training, config=ONE)
    assert result.per_structure["unique"].tolist() == [True, True, False, False, False]
    assert result.summary["uniqueness"] == pytest.approx(2 / 5)
    assert result.summary["novelty"] == 0.0 and result.summary["n_novel"] == 0
    assert result.per_structure["novel"].tolist() == [False] * 5


def test_matching_can_be_skipped_and_is_reported_as_not_computed():
    training = table_of([rocksalt()], prefix="t")
    generated = table_of([rocksalt(), rocksalt(5.7)])
    result = evaluate_structures(generated, training, training, config=ONE.model_copy(update={"matching": False}))
    assert np.isnan(result.summary["uniqueness"]) and np.isnan(result.summary["novelty"])
    assert result.per_structure["unique"].isna().all() and result.per_structure["novel"].isna().all()
    assert result.summary["validity"] == 1.0 and "| uniqueness | n/a |" in result.markdown()


def test_novelty_is_nan_without_training_and_counts_new_structures():
    generated = table_of([rocksalt(species=("K", "Cl")), cubic_perovskite()])
    assert np.isnan(evaluate_structures(generated, generated, config=ONE).summary["novelty"])
    training = table_of([cubic_perovskite()], prefix="t")
    result = evaluate_structures(generated, generated, training, config=ONE)
    assert result.per_structure["novel"].tolist() == [True, False]
    assert result.summary["novelty"] == 0.5


def _bad_rows() -> pd.DataFrame:
    """What a generation folder can hold: a failed decode, NaN coords, junk JSON, overlapping atoms, NaCl2."""
    nan_structure = rocksalt().as_dict()
    nan_structure["sites"][0]["abc"] = [float("nan")] * 3
    overlapping = Structure(Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.4, 0, 0]], coords_are_cartesian=True)
    nacl2 = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    return pd.DataFrame({
        "id": ["ok", "decode", "nan", "junk", "overlap", "nacl2", "empty"],
        "structure": [structure_to_json(rocksalt()), None, json.dumps(nan_structure), "{not json",
                      structure_to_json(overlapping), structure_to_json(nacl2), ""],
        "valid": [True, False, True, True, True, True, True],
        "reason": [None, "no atoms decoded", None, None, None, None, None],
    })


def test_bad_rows_are_invalid_with_reasons_and_never_crash():
    generated = _bad_rows()
    reference = table_of([rocksalt(), cubic_perovskite()])
    result = evaluate_structures(generated, reference, config=ONE)
    rows = result.per_structure.set_index("id")
    assert rows["valid"].tolist() == [True, False, False, False, False, False, False]
    assert rows.loc["decode", "reason"] == "generation: no atoms decoded"
    assert rows.loc["nan", "reason"] == "non-finite coordinates"
    assert rows.loc["junk", "reason"].startswith("unreadable structure")
    assert "0.400 A apart" in rows.loc["overlap", "reason"]
    assert rows.loc["overlap", "valid_comp"] and not rows.loc["overlap", "valid_struct"]
    assert rows.loc["nacl2", "reason"] == "NaCl2 fails SMACT charge neutrality/electronegativity"
    assert rows.loc["nacl2", "valid_struct"] and not rows.loc["nacl2", "valid_comp"]
    assert rows.loc["empty", "reason"] == "no structure"
    assert pd.isna(rows.loc["junk", "unique"])  # uniqueness/novelty only judged for valid rows
    s = result.summary
    assert s["n_generated"] == 7 and s["n_valid"] == 1
    assert s["validity"] == pytest.approx(1 / 7)
    assert s["struct_validity"] == pytest.approx(2 / 7)  # ok and nacl2
    assert s["cov_precision"] <= 3 / 7  # only the three fingerprinted rows can count, divided by all 7
    assert sum(result.reason_counts.values()) == 6
    assert "no structure" in result.markdown()
    # counted by readable kind, without the row's numbers (those stay in the row's own reason)
    assert result.reason_counts["atoms closer than 0.5 A"] == 1
    assert "| atoms closer than 0.5 A | 1 |" in result.markdown() and "# A" not in result.markdown()


@pytest.mark.parametrize("reason, kind", [
    ("atoms 0.400 A apart (< 0.5 A)", "atoms closer than 0.5 A"),
    ("cell volume 0.05 A^3 < 0.1", "cell volume below 0.1 A^3"),
    ("generation: cell volume 0.0312 A^3 below 0.5 A^3", "generation: cell volume below 0.5 A^3"),
    ("atoms 0.1 A apart (< 0.5 A); NaCl2 fails SMACT charge neutrality/electronegativity",
     "atoms closer than 0.5 A; fails SMACT charge neutrality/electronegativity"),
    ("generation: degenerate lattice parameters [1.0, 2.0, 0.0, 90.0, 90.0, 90.0]",
     "generation: degenerate lattice parameters"),
    ("generation: 7 O atoms exceed the 6 slots per element (L); raise max_atoms_per_element to at least 7",
     "generation: more atoms of one element than its 6 slots (L)"),
    ("generation: element(s) Pu not on the periodic-table grid (H-Bi)", "generation: element(s) not on the periodic-table grid"),
    ("unreadable structure: ValueError: bad cif", "unreadable structure"),
    ("fingerprint failed: RuntimeError: x", "fingerprint failed"),
    ("no structure", "no structure"),
    ("an unforeseen reason 3.2 eV", "an unforeseen reason"),
])
def test_invalid_reasons_are_counted_by_a_readable_kind(reason, kind):
    assert reason_kind(reason) == kind


def test_crystalnn_failure_is_counted_and_makes_the_row_invalid(monkeypatch):
    # A real CrystalNN failure needs a pathological cell; force one through the featurizer to test the bookkeeping.
    from unimat_core.metrics import fingerprints

    real = fingerprints._site_featurizer()

    class Failing:
        def featurize(self, structure, i):
            if structure.composition.reduced_formula == "KCl":
                raise ValueError("no neighbours found")
            return real.featurize(structure, i)

    monkeypatch.setattr(fingerprints, "_site_featurizer", lambda: Failing())
    generated = table_of([rocksalt(), rocksalt(species=("K", "Cl"))])
    result = evaluate_structures(generated, table_of([rocksalt()]), config=ONE)
    assert result.per_structure["valid"].tolist() == [True, False]
    assert result.per_structure["reason"][1].startswith("CrystalNN failed: ValueError: no neighbours found")
    assert result.summary["n_fingerprint_failures"] == 1
    assert result.summary["comp_validity"] == 1.0  # the flags themselves are kept


def test_subset_mode_fingerprints_only_the_eval_subset():
    generated = table_of([rocksalt(), cubic_perovskite(), rocksalt(species=("K", "Cl")), rocksalt(5.7)])
    config = MetricsConfig(n_workers=1, coverage_on="subset", n_eval=2, seed=1)
    result = evaluate_structures(generated, generated, config=config)
    assert result.summary["n_eval"] == 2
    assert result.per_structure["fingerprint_ok"].sum() == 2
    assert result.per_structure["in_eval"].sum() == 2 and result.summary["validity"] == 1.0


def test_reference_limit_uses_a_seeded_subset_and_says_so():
    generated = table_of([rocksalt(), cubic_perovskite()])
    reference = table_of([rocksalt(), cubic_perovskite(), rocksalt(species=("K", "Cl")), rocksalt(5.7)], prefix="r")
    config = MetricsConfig(n_workers=1, reference_limit=2, seed=3)
    result = evaluate_structures(generated, reference, config=config)
    again = evaluate_structures(generated, reference, config=config)
    assert result.summary["n_reference"] == 2 and result.summary["n_reference_given"] == 4
    assert result.summary["cov_recall"] == again.summary["cov_recall"]  # same seed, same subset
    assert "seeded subset of 2 of the 4 reference structures" in result.markdown()
    full = evaluate_structures(generated, reference, config=ONE)
    assert full.summary["n_reference"] == 4 and "seeded subset" not in full.markdown()
    with pytest.raises(MetricsError, match="reference_limit"):
        MetricsConfig(reference_limit=0)


def test_write_and_read_metrics_round_trip(tmp_path):
    table = table_of([rocksalt(), cubic_perovskite()])
    result = evaluate_structures(table, table, config=MetricsConfig(n_workers=1, dataset="mp_20"))
    paths = write_metrics(result, tmp_path / "metrics")
    assert sorted(paths) == ["config", "markdown", "per_structure", "summary"]
    back = read_metrics(tmp_path / "metrics")
    assert back.config == result.config
    assert back.summary.keys() == result.summary.keys()
    for key, value in result.summary.items():
        assert back.summary[key] == value or (np.isnan(value) and np.isnan(back.summary[key])), key
    pd.testing.assert_frame_equal(back.per_structure, result.per_structure)
    assert "mp_20 cutoffs: struct 0.4, comp 10.0" in (tmp_path / "metrics" / "summary.md").read_text()


def test_config_round_trips_and_rejects_bad_values():
    config = MetricsConfig(dataset="carbon_24", n_eval=10, cache_dir="/tmp/x")
    assert MetricsConfig.from_dict(config.as_dict()) == config
    assert config.cutoffs == (0.2, 4.0)
    assert MetricsConfig(struct_cutoff=0.3).cutoffs == (0.3, 4.0)  # perov_5 comp cutoff by default
    assert MetricsConfig(dataset="mp20").cutoffs == (0.4, 10.0)  # CDVAE's own dataset names work too
    assert MetricsConfig(dataset="my_csv", struct_cutoff=0.3, comp_cutoff=5).cutoffs == (0.3, 5)
    with pytest.raises(MetricsError, match="unknown dataset"):
        MetricsConfig(dataset="my_csv")
    with pytest.raises(MetricsError, match="unknown metrics option"):
        MetricsConfig.from_dict({"n_evals": 3})


def test_missing_structure_column_or_empty_reference_is_a_clear_error():
    table = table_of([rocksalt()])
    with pytest.raises(MetricsError, match="no 'structure' column"):
        evaluate_structures(table.drop(columns="structure"), table, config=ONE)
    with pytest.raises(MetricsError, match="reference table is empty"):
        evaluate_structures(table, table.iloc[:0], config=ONE)


@pytest.mark.slow
def test_process_pool_and_reference_cache_give_the_same_numbers(tmp_path, perov_test_subset, monkeypatch):
    from unimat_core.metrics import parallel

    monkeypatch.setattr(parallel, "MIN_PARALLEL", {"check": 1, "fingerprint": 1, "match": 1})  # pool even for tiny jobs
    generated = perov_test_subset.iloc[:8]
    serial = evaluate_structures(generated, perov_test_subset, config=ONE).summary
    cold = evaluate_structures(generated, perov_test_subset,
                               config=MetricsConfig(n_workers=2, cache_dir=str(tmp_path))).summary
    warm = evaluate_structures(generated, perov_test_subset,
                               config=MetricsConfig(n_workers=1, cache_dir=str(tmp_path))).summary
    assert (cold["reference_cached"], warm["reference_cached"]) == (0.0, 1.0)
    for key in ("validity", "cov_recall", "cov_precision", "amsd_recall", "emd_density", "emd_n_elements", "uniqueness"):
        assert serial[key] == cold[key] == warm[key], key


def test_empty_or_all_invalid_generated_sets_give_zero_validity_not_a_crash():
    reference = table_of([rocksalt()])
    empty = evaluate_structures(reference.iloc[:0], reference, config=ONE).summary
    assert empty["n_generated"] == 0 and np.isnan(empty["validity"]) and empty["cov_recall"] == 0.0
    junk = pd.DataFrame({"id": ["a", "b"], "structure": [None, "[]"]})
    s = evaluate_structures(junk, reference, reference, config=ONE).summary
    assert s["validity"] == 0.0 and s["n_valid"] == 0 and s["cov_precision"] == 0.0
    assert np.isnan(s["uniqueness"]) and np.isnan(s["emd_density"])
