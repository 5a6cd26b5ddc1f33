"""Elemental references and the offline same-calculator hull, with EMT (fast, real)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dft.batch import read_relaxed, relax_table
from dft.calculators import CalculatorConfig
from dft.elemental import elemental_prototypes, elemental_references
from dft.hull import reference_from_relaxed, score_candidates
from dft.relax import RelaxConfig, relax_structure
from unimat_core.structure_table import records_to_frame


def test_prototypes_cover_lattices_and_dimers():
    assert set(elemental_prototypes("Cu")) == {"fcc", "bcc", "hcp", "sc", "diamond"}
    oxygen = elemental_prototypes("O")
    assert "dimer" in oxygen and oxygen["dimer"].lattice.a == 10.0
    assert oxygen["dimer"].get_distance(0, 1) == pytest.approx(1.2)


def test_elemental_references_pick_lowest_prototype_and_skip_failures():
    config = RelaxConfig(fmax=0.02, max_steps=300)
    refs = elemental_references(["Cu", "Al", "Na"], CalculatorConfig("emt"), config)  # EMT has no Na
    assert sorted(refs["reduced_formula"]) == ["Al", "Cu"]
    cu = refs[refs["reduced_formula"] == "Cu"].iloc[0]
    assert cu["id"] == f"elemental:Cu:{cu['prototype']}" and cu["calculator"] == "emt"
    fcc = relax_structure(elemental_prototypes("Cu")["fcc"], CalculatorConfig("emt"), config)
    assert cu["energy_per_atom"] <= fcc.energy_per_atom + 1e-9


def test_offline_hull_from_one_calculator(tmp_path):
    """Every hull energy from EMT: elemental Cu/Al + a relaxed L1_2 Cu3Al, then score candidates."""
    emt = CalculatorConfig("emt")
    config = RelaxConfig(fmax=0.02, max_steps=300)
    refs = elemental_references(["Cu", "Al"], emt, config)
    cu3al = Structure(Lattice.cubic(3.7), ["Al", "Cu", "Cu", "Cu"],
                      [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    relax_table(records_to_frame([cu3al], ["cu3al"], source="test"), tmp_path, calculator=emt, config=config)
    relaxed = read_relaxed(tmp_path)
    reference = reference_from_relaxed(relaxed, refs)
    assert set(reference["source"]) == {"relaxed:emt"}

    # candidate = the same Cu3Al energy: decomposition 0 when on the hull, formation from the corners
    cu3al_epa = relaxed["energy_per_atom"].iloc[0]
    e_cu = refs.set_index("reduced_formula").loc["Cu", "energy_per_atom"]
    e_al = refs.set_index("reduced_formula").loc["Al", "energy_per_atom"]
    expected_formation = cu3al_epa - (0.75 * e_cu + 0.25 * e_al)
    import pandas as pd
    candidates = pd.DataFrame({"id": ["same", "higher"], "formula": ["Cu3Al", "Cu3Al"],
                               "energy_per_atom": [cu3al_epa, cu3al_epa + 0.05]})
    scores = score_candidates(candidates, reference).set_index("id")
    assert scores.loc["same", "formation_energy_per_atom"] == pytest.approx(expected_formation)
    hull_at_cu3al = min(0.0, expected_formation)
    assert scores.loc["same", "decomposition_energy"] == pytest.approx(expected_formation - hull_at_cu3al)
    assert scores.loc["higher", "decomposition_energy"] == pytest.approx(
        scores.loc["same", "decomposition_energy"] + 0.05)
    assert np.isfinite(scores["e_above_hull"]).all()
