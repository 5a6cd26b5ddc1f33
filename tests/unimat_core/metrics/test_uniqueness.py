from __future__ import annotations

from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt
from unimat_core.metrics.uniqueness import uniqueness_novelty
from unimat_core.structure_table import structure_to_json


def _inputs(structures):
    return [structure_to_json(s) for s in structures], [s.composition.reduced_formula for s in structures]


def test_duplicates_are_not_unique_first_occurrence_is():
    # NaCl, SrTiO3, NaCl again as a rescaled supercell (a duplicate), BaTiO3, SrTiO3 again
    structures = [rocksalt(), cubic_perovskite(), rocksalt(5.9) * (1, 1, 2), cubic_perovskite(species=("Ba", "Ti", "O")),
                  cubic_perovskite(3.95)]
    unique, novel = uniqueness_novelty(*_inputs(structures))
    assert unique.tolist() == [True, True, False, True, False]
    assert novel is None


def test_same_formula_different_structure_is_unique():
    # NaCl in rock salt vs NaCl in a CsCl-type cell: same formula, different structure
    from pymatgen.core import Lattice, Structure

    cscl_type = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    unique, _ = uniqueness_novelty(*_inputs([rocksalt(), cscl_type]))
    assert unique.tolist() == [True, True]


def test_training_structures_are_not_novel_and_others_are():
    training = [rocksalt(), cubic_perovskite()]
    generated = [cubic_perovskite(3.92), rocksalt(species=("K", "Cl")), rocksalt(5.6)]
    train_texts, train_formulas = _inputs(training)
    unique, novel = uniqueness_novelty(*_inputs(generated), train_texts, train_formulas)
    assert unique.all()
    assert novel.tolist() == [False, True, False]


def test_training_set_itself_has_novelty_zero():
    training = [rocksalt(), cubic_perovskite(), cubic_perovskite(species=("Ba", "Ti", "O"))]
    texts, formulas = _inputs(training)
    _, novel = uniqueness_novelty(texts, formulas, texts, formulas)
    assert not novel.any()
