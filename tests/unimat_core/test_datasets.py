import gzip

import pandas as pd
import pytest

from unimat_core.datasets import MaterialsProjectError, MP20Query, fetch_materials_project, load_bundled, read_cdvae_csv
from unimat_core.datasets.bundled import bundled_csv_paths
from unimat_core.datasets.source import DatasetSource, load_source
from unimat_core.datasets.splits import hashed_split


def _copy_rows(tmp_path, n=5, name="train.csv"):
    with gzip.open(bundled_csv_paths("perov_5")["val"], "rt") as fh:
        frame = pd.read_csv(fh).head(n)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return frame, path


def test_bundled_sets_are_complete_and_offline():
    perov = load_bundled("perov_5", ("val",), workers=1)
    assert len(perov.structures) == 3787 and perov.rejected.empty
    assert set(perov.structures["split"]) == {"val"} and set(perov.structures["source"]) == {"cdvae:perov_5"}
    assert {"heat_ref", "dir_gap", "source_formula"} <= set(perov.structures.columns)
    with pytest.raises(KeyError, match="bundled"):
        load_bundled("mp_20")


def test_cdvae_csv_from_any_path_keeps_malformed_rows_with_reason(tmp_path):
    frame, _ = _copy_rows(tmp_path)
    frame.loc[2, "cif"] = "data_broken\n_cell_length_a 4\nthis is not a CIF"
    frame.loc[3, "cif"] = float("nan")
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    result = read_cdvae_csv(path, workers=1)
    assert len(result.structures) == 3 and len(result.rejected) == 2
    assert set(result.rejected["id"]) == {str(frame.material_id[2]), str(frame.material_id[3])}
    assert result.rejected["reason"].str.contains("CIF").all()
    assert (result.structures["split"] == "train").all()  # split taken from the file name
    assert result.rejected.loc[0, "raw"].startswith("data_broken")


def test_cdvae_csv_needs_a_cif_column(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1]}).to_csv(path)
    with pytest.raises(ValueError, match="no 'cif' column"):
        read_cdvae_csv(path)


def test_csv_source_and_parallel_parse_agree(tmp_path):
    _, path = _copy_rows(tmp_path, n=600)
    serial = read_cdvae_csv(path, workers=1).structures
    parallel = load_source(DatasetSource.parse(str(path))).structures
    pd.testing.assert_frame_equal(serial, parallel)


def test_hashed_split_is_reproducible_and_order_free():
    ids = [f"mp-{i}" for i in range(3000)]
    splits = hashed_split(ids, seed="s")
    assert splits == hashed_split(ids, seed="s")
    assert dict(zip(ids, splits)) == dict(zip(ids[::-1], hashed_split(ids[::-1], seed="s")))
    counts = pd.Series(splits).value_counts(normalize=True)
    assert abs(counts["train"] - 0.6) < 0.03 and abs(counts["test"] - 0.2) < 0.03


def test_materials_project_without_key_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(MaterialsProjectError, match="MP_API_KEY is not set"):
        fetch_materials_project()


def test_materials_project_without_network_fails_fast():
    query = MP20Query(endpoint="http://127.0.0.1:9", connect_timeout_s=1.0)  # nothing listens on port 9
    with pytest.raises(MaterialsProjectError, match="cannot reach the Materials Project at 127.0.0.1:9"):
        fetch_materials_project(query, api_key="dummy-key")


def test_materials_project_with_a_stand_in_service(nacl, perovskite):
    """The MP web service cannot exist offline: this stand-in replaces only the HTTP search and
    returns summary documents shaped like mp-api's (use_document_model=False)."""
    seen = {}

    def stand_in_search(criteria, fields):
        seen.update(criteria=criteria, fields=fields)
        big = nacl.copy()
        big.make_supercell([2, 2, 2])  # 32 sites: outside MP-20 even if a server let it through
        return [
            {"material_id": "mp-22862", "structure": nacl.as_dict(), "formation_energy_per_atom": -2.1,
             "energy_above_hull": 0.0, "band_gap": 5.0, "symmetry": {"number": 225}},
            {"material_id": "mp-5229", "structure": perovskite, "formation_energy_per_atom": -3.5,
             "energy_above_hull": 0.0, "band_gap": 1.8, "symmetry": {"number": 221}},
            {"material_id": "mp-big", "structure": big.as_dict(), "formation_energy_per_atom": -2.0,
             "energy_above_hull": 0.0, "band_gap": 5.0, "symmetry": {"number": 225}},
            {"material_id": "mp-broken", "structure": {"not": "a structure"}},
        ]

    result = fetch_materials_project(MP20Query(), api_key="k", search=stand_in_search, check_network=False)
    assert seen["criteria"]["num_sites"] == (1, 20) and seen["criteria"]["theoretical"] is False
    assert seen["criteria"]["energy_above_hull"] == (0.0, 0.08)
    table = result.structures
    assert table["id"].tolist() == ["mp-22862", "mp-5229"]
    assert table["spacegroup_number"].tolist() == [225, 221]
    assert set(table["split"]) <= {"train", "val", "test"} and (table["source"] == "materials_project").all()
    assert result.rejected["id"].tolist() == ["mp-broken"]
    assert MP20Query.from_dict(MP20Query(chemsys=("Li-O",)).as_dict()) == MP20Query(chemsys=("Li-O",))


def test_source_validation():
    with pytest.raises(ValueError, match="unknown bundled dataset"):
        DatasetSource(kind="bundled", name="nope")
    with pytest.raises(ValueError, match="not found"):
        DatasetSource.parse("/no/such/file.csv")
    assert DatasetSource.parse("carbon_24", splits=("test",)).name == "carbon_24"
