"""Binary prototype decorations: right composition, right space group, sensible starting contacts."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from dft.prototypes import BINARY_PROTOTYPES, binary_decorations, contact_radius, element_pairs

# prototype -> (A:B ratio of the A-B decoration, space group symbol)
EXPECTED = {
    "rocksalt": ("MgO", "Fm-3m"), "cscl": ("MgO", "Pm-3m"), "zincblende": ("MgO", "F-43m"),
    "wurtzite": ("MgO", "P6_3mc"), "nias": ("MgO", "P6_3/mmc"), "fluorite": ("MgO2", "Fm-3m"),
    "rutile": ("MgO2", "P4_2/mnm"), "cdi2": ("MgO2", "P-3m1"), "corundum": ("Mg2O3", "R-3c"),
    "reo3": ("MgO3", "Pm-3m"), "l12": ("MgO3", "Pm-3m"), "spinel": ("Mg3O4", "Fd-3m"),
}


def test_every_prototype_is_the_structure_type_it_names():
    assert set(EXPECTED) == set(BINARY_PROTOTYPES)
    decorations = binary_decorations("Mg", "O")
    for name, (formula, spacegroup) in EXPECTED.items():
        structure = decorations[f"{name}:Mg-O"]
        assert structure.composition.reduced_formula == Composition(formula).reduced_formula, name
        assert SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_symbol() == spacegroup, name
        swapped = decorations.get(f"{name}:O-Mg")
        if BINARY_PROTOTYPES[name].symmetric:
            assert swapped is None  # swapping the sites gives the same structure: decorated once
        else:
            assert swapped is not None and swapped.composition.get_atomic_fraction("Mg") == pytest.approx(
                structure.composition.get_atomic_fraction("O"))  # the swapped stoichiometry
    assert len(decorations) == 20
    assert len(decorations["spinel:Mg-O"]) == 14 and len(decorations["rocksalt:Mg-O"]) == 2  # primitive cells


def test_start_cell_touches_at_the_sum_of_atomic_radii():
    r_na, r_cl = contact_radius("Na"), contact_radius("Cl")
    assert (r_na, r_cl) == (1.8, 1.0)  # Slater's radii: rock-salt NaCl starts at 2.8 A (exp. 2.82)
    for name, structure in binary_decorations("Na", "Cl").items():
        closest = min(structure.get_distance(i, j) / (contact_radius(structure[i].specie.symbol)
                                                       + contact_radius(structure[j].specie.symbol))
                      for i in range(len(structure)) for j in range(len(structure)) if i < j)
        assert closest >= 1 - 1e-6, name  # nothing closer than touching
    rocksalt = binary_decorations("Na", "Cl", ("rocksalt",))["rocksalt:Na-Cl"]
    assert rocksalt.get_distance(0, 1) == pytest.approx(2.8)


def test_bad_requests_are_refused_and_pairs_cover_every_system():
    with pytest.raises(ValueError, match="two different elements"):
        binary_decorations("O", "O")
    with pytest.raises(ValueError, match="unknown prototype"):
        binary_decorations("Mg", "O", ("perovskite",))
    assert element_pairs(["Nb-Co-O", "Co-O", "Mg"]) == [("Co", "Nb"), ("Co", "O"), ("Nb", "O")]


def test_a_decoration_handed_out_is_a_copy_the_caller_may_change():
    first = binary_decorations("Cu", "Au")["l12:Cu-Au"]
    first.scale_lattice(2 * first.volume)
    first.replace_species({"Cu": "Ag"})
    again = binary_decorations("Cu", "Au")["l12:Cu-Au"]
    assert again.volume == pytest.approx(first.volume / 2) and again.composition.reduced_formula == "CuAu3"
