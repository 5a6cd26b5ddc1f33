import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies

from unimat_core.representation import (
    RepresentationError,
    UniMatSpec,
    composition_grid,
    decode,
    decode_batch,
    encode,
)
from unimat_core.structure_table import structures_of


def _sites_by_element(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and fractional coords (wrapped), stably sorted by Z: the order decode uses."""
    numbers = np.array(structure.atomic_numbers)
    order = np.argsort(numbers, kind="stable")
    return numbers[order], structure.frac_coords[order] % 1.0


def assert_same_crystal(original: Structure, decoded: Structure, atol: float = 1e-5) -> None:
    z0, f0 = _sites_by_element(original)
    z1, f1 = _sites_by_element(decoded)
    np.testing.assert_array_equal(z0, z1)
    np.testing.assert_allclose(decoded.lattice.abc, original.lattice.abc, rtol=1e-6)
    np.testing.assert_allclose(decoded.lattice.angles, original.lattice.angles, atol=1e-4)
    delta = f1 - f0
    delta -= np.round(delta)  # periodic: 0.9999999 and 0.0 are the same coordinate
    assert np.abs(delta).max(initial=0) < atol


@pytest.mark.parametrize("name", ["perov_5", "carbon_24"])
def test_round_trip_every_bundled_structure(bundled_tables, name):
    structures = structures_of(bundled_tables[name])
    spec = UniMatSpec.fit(structures)
    batch = encode(structures, spec, ids=bundled_tables[name]["id"].tolist())
    assert batch.coords.shape == (len(structures), *spec.shape) and batch.coords.dtype == np.float32
    assert batch.lattice.shape == (len(structures), 6) and not batch.failures
    decoded = decode_batch(batch, spec)
    assert all(d.valid for d in decoded)
    for original, crystal in zip(structures, decoded):
        assert_same_crystal(original, crystal.structure)


def test_bundled_counts(bundled_tables):
    assert len(bundled_tables["perov_5"]) + len(bundled_tables["carbon_24"]) == 11_634


def test_null_slots_and_layout(perovskite):
    spec = UniMatSpec(max_atoms_per_element=4)
    batch = encode([perovskite], spec)
    coords = batch.coords[0]
    row, col = spec.grid.positions[7]  # O, Z=8
    assert (coords[:3, row, col] >= 0).all() and (coords[3, row, col] == -1).all()
    assert (coords == -1).sum() == (4 * 9 * 18 - 5) * 3
    grid = composition_grid(batch.coords, spec)[0]
    assert grid[row, col] == 3 and grid.sum() == 5


def test_spec_round_trips_through_json():
    spec = UniMatSpec(max_atoms_per_element=7)
    assert UniMatSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec


def _bad_structures() -> dict[str, Structure]:
    cubic = Lattice.cubic(4.0)
    return {
        "off-grid": Structure(cubic, ["Og", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "dummy": Structure(cubic, [DummySpecies("X"), "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "disordered": Structure(cubic, [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "too-many": Structure(cubic, ["Na"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        "nan": Structure(cubic, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("off-grid", "element(s) Og not on the periodic-table grid"),
        ("dummy", "dummy species X0+"),
        ("disordered", "partial occupancy"),
        ("too-many", "4 Na atoms exceed the 3 slots per element (L)"),
        ("nan", "non-finite fractional coordinate"),
    ],
)
def test_bad_input_raises_naming_structure_and_reason(name, message):
    structure = _bad_structures()[name]
    if name == "nan":
        structure = structure.copy()
        structure._sites[1]._frac_coords = np.array([np.nan, 0.5, 0.5])
    with pytest.raises(RepresentationError) as info:
        encode([structure], UniMatSpec(max_atoms_per_element=3), ids=[f"bad-{name}"])
    assert f"'bad-{name}'" in str(info.value)
    assert message in str(info.value)


def test_bad_inputs_are_recorded_and_the_batch_survives(nacl):
    bad = _bad_structures()
    structures = [nacl, bad["off-grid"], bad["too-many"], nacl]
    batch = encode(structures, UniMatSpec(max_atoms_per_element=3), ids=["a", "b", "c", "d"], on_error="ignore")
    assert batch.ids == ["a", "d"] and len(batch.coords) == 2
    assert [(f.index, f.structure_id) for f in batch.failures] == [(1, "b"), (2, "c")]
    with pytest.warns(UserWarning, match="structure 'b'"):
        encode(structures, UniMatSpec(max_atoms_per_element=3), ids=["a", "b", "c", "d"], on_error="warn")


def test_decode_never_raises_on_sampled_tensors():
    spec = UniMatSpec(max_atoms_per_element=3)
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(6, *spec.shape)).astype(np.float32)
    lattice = np.zeros((6, 6), np.float32)
    coords[1, 0, 0, 0, 0] = np.nan                      # NaN from a sampler
    coords[2] = spec.null_value + 0.05 * rng.normal(size=spec.shape)  # everything near null
    lattice[3, 3:] = 5.0                                 # angles of 240 degrees: no cell
    lattice[4, :3] = -40.0                               # lengths ~1e-8 A: no volume
    lattice[5, 0] = np.inf
    decoded = decode(coords, lattice, spec)
    assert decoded[0].valid and len(decoded[0].structure) > 0
    assert "non-finite" in decoded[1].reason
    assert "no atoms" in decoded[2].reason
    assert "degenerate lattice" in decoded[3].reason
    assert "volume" in decoded[4].reason
    assert "non-finite" in decoded[5].reason
    frac = decoded[0].structure.frac_coords
    assert ((frac >= 0) & (frac < 1)).all()


def test_decode_wraps_coordinates_and_reads_near_null_as_empty():
    spec = UniMatSpec(max_atoms_per_element=2)
    coords = np.full((1, *spec.shape), spec.null_value, np.float32)
    row, col = spec.grid.positions[10]  # Na
    coords[0, 0, row, col] = [1.25, -0.25, 0.5]      # a real atom outside [0, 1): wraps
    coords[0, 1, row, col] = [-0.9, -0.95, -0.8]    # close to null: no atom
    crystal = decode(coords, np.zeros((1, 6), np.float32), spec)[0]
    assert crystal.valid and crystal.structure.composition.reduced_formula == "Na"
    np.testing.assert_allclose(crystal.structure.frac_coords[0], [0.25, 0.75, 0.5], atol=1e-6)


def test_decode_rejects_wrong_shapes():
    spec = UniMatSpec(max_atoms_per_element=2)
    with pytest.raises(ValueError, match="coords must have shape"):
        decode(np.zeros((1, 3, 9, 18, 3), np.float32), np.zeros((1, 6), np.float32), spec)


@pytest.mark.parametrize(("name", "shape"), [("perov_5", (3, 6, 17, 3)), ("carbon_24", (24, 1, 1, 3))])
def test_cropped_grid_round_trips_every_bundled_structure(bundled_tables, name, shape):
    structures = structures_of(bundled_tables[name])
    spec = UniMatSpec.fit(structures, crop_grid=True)
    assert spec.shape == shape and UniMatSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
    batch = encode(structures, spec)
    assert batch.coords.shape == (len(structures), *shape)
    for original, crystal in zip(structures, decode_batch(batch, spec)):
        assert_same_crystal(original, crystal.structure)


def test_element_outside_a_cropped_grid_is_a_clear_error(nacl):
    spec = UniMatSpec.fit([Structure(Lattice.cubic(3.6), ["C", "C"], [[0, 0, 0], [0.25, 0.25, 0.25]])], crop_grid=True)
    batch = encode([nacl], spec, ids=["nacl"], on_error="ignore")
    assert len(batch) == 0
    assert "Na, Cl not on the periodic-table grid (this cropped grid holds only the 1 elements" in batch.failures[0].reason
