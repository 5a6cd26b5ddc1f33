import numpy as np
import pytest
from pymatgen.core import Composition

from dft.discovery_benchmark.random_search import (
    RandomStructureConfig,
    RandomStructureError,
    min_distance_ratio,
    random_structure,
)


@pytest.mark.parametrize("formula", ["SrTiO3", "Ba2Ti2O6", "C8", "CdCuN3", "Li"])
def test_random_crystals_have_the_composition_and_respect_the_distance_rule(formula):
    rng = np.random.default_rng(0)
    config = RandomStructureConfig()
    for _ in range(5):
        structure = random_structure(formula, rng, config)
        assert structure.composition == Composition(formula)
        assert min_distance_ratio(structure) >= config.min_distance_factor - 1e-9
        assert structure.volume > 0 and structure.is_ordered


def test_seeded_generation_is_reproducible_and_varied():
    a = random_structure("SrTiO3", np.random.default_rng(7))
    b = random_structure("SrTiO3", np.random.default_rng(7))
    c = random_structure("SrTiO3", np.random.default_rng(8))
    assert a == b and a != c


def test_impossible_rules_fail_clearly():
    crowded = RandomStructureConfig(packing_fraction=5.0, volume_jitter=0.0, max_restarts=3, attempts_per_atom=5)
    with pytest.raises(RandomStructureError, match="no structure met the distance rule"):
        random_structure("C24", np.random.default_rng(0), crowded)
    with pytest.raises(ValueError, match="not an integer"):
        random_structure("NaCl0.5", np.random.default_rng(0))
    assert RandomStructureConfig.from_dict(crowded.as_dict()) == crowded


def test_random_candidates_table_records_failures_and_is_keyed_per_candidate():
    from dft.discovery_benchmark.random_search import random_candidates
    from unimat_core.structure_table import structure_from_json, validate_frame

    config = RandomStructureConfig()
    table = random_candidates(["Cu3Au", "Sr1Ti1O3", "NaCl0.5"], 3, seed=4, config=config)
    validate_frame(table)
    assert len(table) == 9 and table["trial"].tolist() == [0, 1, 2] * 3
    good = table[table["target_formula"] != "NaCl0.5"]
    assert good["valid"].all() and (good["reason"] == "").all() and (good["seconds"] > 0).all()
    for formula, text in zip(good["target_formula"], good["structure"]):
        structure = structure_from_json(text)
        assert structure.composition == Composition(formula)
        assert min_distance_ratio(structure) >= config.min_distance_factor - 1e-9
    bad = table[table["target_formula"] == "NaCl0.5"]
    assert not bad["valid"].any() and bad["structure"].isna().all()
    assert bad["reason"].str.contains("not an integer").all()
    # each candidate depends only on (seed, formula, trial): asking for fewer formulas changes nothing
    alone = random_candidates(["Sr1Ti1O3"], 2, seed=4, config=config)
    assert alone["structure"].tolist() == table.loc[table["target_formula"] == "Sr1Ti1O3", "structure"].tolist()[:2]
