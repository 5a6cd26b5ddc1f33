"""Reference phases of an element: the "best known" structure a one-element target is measured against.

For datasets such as carbon_24 every target reduces to one element, so the ground state is known
independently of the test split: the lowest energy per atom among the element's reference phases,
relaxed with the benchmark's own calculator and settings. Carbon: cubic diamond and AB (Bernal)
graphite, both reported (CHGNet's interlayer binding in graphite is whatever the potential gives;
the lower of the two is the reference). Any other element: dft.elemental's simple prototypes
(fcc, bcc, hcp, sc, diamond; no molecular phases, so a gas element's reference is a bulk upper bound).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from pymatgen.core import Composition, Lattice, Structure

from dft.elemental import elemental_prototypes
from unimat_core.structure_table import CORE_COLUMNS, records_to_frame


def carbon_phases() -> dict[str, Structure]:
    """Diamond (primitive fcc cell, a = 3.567 A) and AB graphite (a = 2.464 A, c = 6.711 A), experimental cells."""
    a = 3.567
    diamond = Structure(Lattice.cubic(a), ["C"] * 8, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                                     [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75],
                                                     [0.25, 0.75, 0.75]]).get_primitive_structure()
    graphite = Structure(Lattice.hexagonal(2.464, 6.711), ["C"] * 4,
                         [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    return {"diamond": diamond, "graphite": graphite}


def reference_phases(symbol: str) -> dict[str, Structure]:
    """The phases whose lowest relaxed energy per atom is the element's best known energy."""
    if symbol == "C":
        return carbon_phases()
    # bulk phases only: a dimer needs a positions-only relaxation, which one relaxation set cannot mix in
    return {name: s for name, s in elemental_prototypes(symbol).items() if name != "dimer"}


def target_element(formula: str) -> str:
    """The one element of a one-element target (clear error naming the target otherwise)."""
    elements = [e.symbol for e in Composition(formula).elements]
    if len(elements) != 1:
        raise ValueError(f"target {formula} has {len(elements)} elements: reference 'elemental' needs one-element "
                         "targets (e.g. carbon_24's C6..C24); use reference 'known' for compounds")
    return elements[0]


def reference_table(targets: Iterable[str]) -> pd.DataFrame:
    """Structure table of the reference phases of the targets' elements (ids `reference-<El>-<phase>`), with
    columns `element` and `phase`."""
    elements = sorted({target_element(t) for t in targets})
    cases = [(symbol, name, structure) for symbol in elements for name, structure in reference_phases(symbol).items()]
    table = records_to_frame([s for _, _, s in cases], [f"reference-{e}-{n}" for e, n, _ in cases], split="",
                             source="reference-phases")
    table = table[list(CORE_COLUMNS)].copy()
    table["element"] = [e for e, _, _ in cases]
    table["phase"] = [n for _, n, _ in cases]
    return table
