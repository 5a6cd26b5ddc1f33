import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher

from unimat_core.augment import augment, permute_slots, translate
from unimat_core.representation import UniMatSpec, decode, encode
from unimat_core.structure_table import structures_of


def _sorted_atoms(coords, spec):
    """Per element cell, the multiset of atom coordinates (slot order removed)."""
    occupied = coords.mean(-1) > spec.null_threshold
    out = {}
    for l, h, w in zip(*np.nonzero(occupied)):
        out.setdefault((h, w), []).append(tuple(coords[l, h, w]))
    return {k: sorted(v) for k, v in out.items()}


def test_permutation_moves_slots_but_keeps_every_atom(bundled_tables):
    structures = structures_of(bundled_tables["carbon_24"].head(50))
    spec = UniMatSpec.fit(structures)
    coords = encode(structures, spec).coords
    permuted = permute_slots(coords, spec, np.random.default_rng(1))
    assert not np.array_equal(permuted, coords)
    for a, b in zip(coords, permuted):
        assert _sorted_atoms(a, spec) == _sorted_atoms(b, spec)


def test_translation_and_full_augmentation_leave_the_crystal_unchanged(bundled_tables):
    structures = structures_of(bundled_tables["perov_5"].head(20)) + structures_of(bundled_tables["carbon_24"].head(20))
    spec = UniMatSpec.fit(structures)
    batch = encode(structures, spec)
    rng = np.random.default_rng(2)
    matcher = StructureMatcher(ltol=1e-3, stol=1e-3, angle_tol=1e-2, primitive_cell=False, scale=False)
    for transform in (translate, augment):
        moved = transform(batch.coords, spec, rng)
        assert not np.array_equal(moved, batch.coords)
        assert ((moved == spec.null_value).sum(axis=1) == (batch.coords == spec.null_value).sum(axis=1)).all()
        for original, crystal in zip(structures, decode(moved, batch.lattice, spec)):
            assert matcher.fit(original, crystal.structure)
