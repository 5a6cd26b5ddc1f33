import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from unimat_core.representation import UniMatSpec, decode
from unimat_core.structure_table import records_to_frame, structures_of, write_structures
from unimat_core.tensor_store import TensorDataset, tensorize_file, tensorize_frame


@pytest.fixture
def small_table(bundled_tables):
    good = bundled_tables["perov_5"].head(50)
    disordered = Structure(Lattice.cubic(4), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    bad = records_to_frame([disordered], ["disordered-1"], split="val", source="hand-made")
    return pd.concat([good, bad], ignore_index=True)


def test_tensorize_writes_shards_manifest_and_rejects(tmp_path, small_table):
    summary = tensorize_frame(small_table, tmp_path / "ds", shard_size=16)
    assert (summary.n_encoded, summary.n_rejected, summary.n_shards) == (50, 1, 4)
    data = TensorDataset(tmp_path / "ds")
    assert len(data) == 50 and data.spec.max_atoms_per_element == 3
    rejected = pd.read_parquet(tmp_path / "ds" / "rejected.parquet")
    assert rejected["id"].tolist() == ["disordered-1"] and "partial occupancy" in rejected["reason"][0]

    coords, lattice, ids = data.load()
    assert ids == small_table["id"].head(50).tolist()
    originals = structures_of(small_table.head(50))
    for original, crystal in zip(originals, decode(coords, lattice, data.spec)):
        assert crystal.structure.composition == original.composition


def test_tensorize_is_reused_when_inputs_match(tmp_path, small_table):
    first = tensorize_frame(small_table, tmp_path / "ds")
    again = tensorize_frame(small_table, tmp_path / "ds")
    assert again.reused and again.input_hash == first.input_hash
    changed = tensorize_frame(small_table.head(10), tmp_path / "ds")
    assert not changed.reused and changed.n_encoded == 10
    forced = tensorize_frame(small_table.head(10), tmp_path / "ds", spec=UniMatSpec(max_atoms_per_element=5))
    assert not forced.reused and TensorDataset(tmp_path / "ds").spec.max_atoms_per_element == 5


def test_batches_stream_every_crystal_once(tmp_path, small_table):
    path = write_structures(small_table, tmp_path / "structures.parquet")
    tensorize_file(path, tmp_path / "ds", shard_size=8)
    data = TensorDataset(tmp_path / "ds")
    seen = []
    for coords, lattice, ids in data.iter_batches(7, shuffle=True, seed=3):
        assert coords.shape[1:] == data.spec.shape and len(lattice) == len(ids) <= 7
        seen.extend(ids)
    assert sorted(seen) == sorted(data.manifest["id"]) and seen != data.manifest["id"].tolist()
    full, _, ids = data.load()
    first, _, first_ids = next(data.iter_batches(5, shuffle=False))
    np.testing.assert_array_equal(first, full[:5])
    assert len(data.select("val")) == 50 and len(data.select("test")) == 0


def test_missing_dataset_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="unimat tensorize"):
        TensorDataset(tmp_path)


def test_crop_grid_and_a_given_l_are_part_of_what_is_reused(tmp_path, small_table):
    full = tensorize_frame(small_table, tmp_path / "ds")
    cropped = tensorize_frame(small_table, tmp_path / "ds", crop_grid=True)
    assert not cropped.reused
    spec = TensorDataset(tmp_path / "ds").spec
    assert spec.grid.is_cropped and spec.shape[1] * spec.shape[2] < 9 * 18
    assert tensorize_frame(small_table, tmp_path / "ds", crop_grid=True).reused
    wider = tensorize_frame(small_table, tmp_path / "ds", crop_grid=True, max_atoms_per_element=4)
    assert not wider.reused and TensorDataset(tmp_path / "ds").spec.max_atoms_per_element == 4
    assert not tensorize_frame(small_table, tmp_path / "ds").reused and full.n_encoded == 50
    assert not TensorDataset(tmp_path / "ds").spec.grid.is_cropped


def test_niggli_encodes_each_crystal_in_its_reduced_cell_and_is_part_of_what_is_reused(tmp_path):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    diamond = Structure(Lattice.cubic(3.567), ["C"] * 8, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                                      [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75],
                                                      [0.25, 0.75, 0.75]])
    skewed = diamond.copy()
    skewed.make_supercell([[1, 0, 0], [1, 1, 0], [2, 0, 1]])  # same crystal, a cell with 26 and 70 degree angles
    assert skewed.lattice.angles != diamond.lattice.angles
    table = records_to_frame([skewed], ["skewed-diamond"], split="val", source="hand-made")

    plain = tensorize_frame(table, tmp_path / "ds")
    plain_params = decode(*TensorDataset(tmp_path / "ds").load()[:2], TensorDataset(tmp_path / "ds").spec)[0]
    assert np.allclose(plain_params.structure.lattice.parameters, skewed.lattice.parameters, atol=1e-3)

    reduced = tensorize_frame(table, tmp_path / "ds", niggli=True)
    assert not reduced.reused and reduced.n_encoded == 1
    data = TensorDataset(tmp_path / "ds")
    crystal = decode(*data.load()[:2], data.spec)[0].structure
    niggli = skewed.get_reduced_structure("niggli").lattice
    assert np.allclose(crystal.lattice.parameters, niggli.parameters, atol=1e-3)
    assert np.allclose(crystal.lattice.angles, 90.0, atol=1e-3)  # diamond's conventional cell is its Niggli cell
    assert StructureMatcher().fit(crystal, diamond)
    # the choice lives in the spec: whoever encodes with it later (a round's fine-tune data) gets the same cell
    assert data.spec.niggli and UniMatSpec.from_dict(data.spec.as_dict()).niggli
    assert "niggli" not in UniMatSpec(max_atoms_per_element=3).as_dict()  # older specs read back unchanged
    again = tensorize_frame(table, tmp_path / "finetune", spec=data.spec)
    assert again.n_encoded == 1 and np.array_equal(TensorDataset(tmp_path / "finetune").load()[1], data.load()[1])
    assert tensorize_frame(table, tmp_path / "ds", niggli=True).reused
    assert not tensorize_frame(table, tmp_path / "ds").reused and not plain.reused


def test_a_cell_niggli_cannot_reduce_is_a_rejected_row_not_a_failed_stage(tmp_path, bundled_tables):
    good = bundled_tables["perov_5"].head(3)
    flat = Structure(Lattice.from_parameters(3, 3, 3, 89.99, 90, 179.99), ["C"], [[0, 0, 0]])  # pymatgen's SVD fails
    table = pd.concat([good, records_to_frame([flat], ["flat-1"], split="val", source="hand-made")], ignore_index=True)
    summary = tensorize_frame(table, tmp_path / "ds", niggli=True)
    assert (summary.n_encoded, summary.n_rejected) == (3, 1)
    rejected = pd.read_parquet(tmp_path / "ds" / "rejected.parquet")
    assert rejected["id"].tolist() == ["flat-1"] and "Niggli reduction failed" in rejected["reason"][0]
