"""Novelty against every known crystal: all splits and the reference hull, not the training split alone."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt, table_of
from unimat_core.metrics import MetricsConfig, evaluate_structures
from unimat_core.metrics.known import known_crystals, read_known
from unimat_core.structure_table import structure_to_json, write_structures

ONE = MetricsConfig(n_workers=1, n_eval=10)


def _splits() -> pd.DataFrame:
    """A fetched table: SrTiO3 in the training split, BaTiO3 in the test split."""
    table = table_of([cubic_perovskite(), cubic_perovskite(4.0, ("Ba", "Ti", "O"))], prefix="cdvae-")
    table["split"] = ["val", "test"]
    return table


def test_a_reproduced_test_crystal_is_not_novel():
    generated = table_of([cubic_perovskite(4.01, ("Ba", "Ti", "O")), rocksalt()], prefix="gen")
    training_only = evaluate_structures(generated, _splits(), _splits().query("split == 'val'"), ONE)
    assert training_only.per_structure["novel"].tolist() == [True, True]  # the old check: BaTiO3 looked novel
    known = known_crystals([("perov_5", _splits())])
    everything = evaluate_structures(generated, _splits(), known, ONE)
    assert everything.per_structure["novel"].tolist() == [False, True]
    assert everything.summary["n_known"] == 2 and "vs 2 known crystals" in everything.markdown()


def test_known_crystals_merge_tables_and_the_reference_hull(tmp_path):
    hull = pd.DataFrame({"id": ["prototype:Na-Cl:rocksalt:Na-Cl", "mp-1"], "composition": ["Na1 Cl1", "Na2"],
                         "energy_per_atom": [-3.6, -1.3], "source": "relaxed:chgnet",
                         "structure": [structure_to_json(rocksalt()), None]})
    known = known_crystals([("perov_5", _splits()), ("perov_5", _splits()), ("reference-hull", hull)])
    assert known["id"].tolist() == ["perov_5:cdvae-0", "perov_5:cdvae-1",
                                    "reference-hull:prototype:Na-Cl:rocksalt:Na-Cl"]
    assert known["reduced_formula"].tolist() == ["SrTiO3", "BaTiO3", "NaCl"]  # the hull row without structure: out

    write_structures(_splits(), tmp_path / "structures.parquet")
    hull.to_parquet(tmp_path / "reference.parquet", index=False)
    read = read_known([("perov_5", tmp_path / "structures.parquet"),
                       ("reference-hull", tmp_path / "reference.parquet")])
    pd.testing.assert_frame_equal(read, known)
    with pytest.raises(FileNotFoundError, match=r"missing.parquet \(elsewhere\) does not exist"):
        read_known([("elsewhere", tmp_path / "missing.parquet")])
