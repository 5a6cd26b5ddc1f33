"""Binary structure prototypes decorated with a pair of elements: the competing phases of an offline hull.

A ternary candidate can only be judged stable if the binaries it could decompose into are on the hull.
Without a database, we build them the way OQMD does: take the common binary structure types and put
the two elements on their sites, both ways round (A on the first site and B on the second, then
swapped), so every pair gets AB, AB2/A2B, A2B3/A3B2, AB3/A3B and A3B4/A4B3 compositions in the structure
types that hold most known binaries. Each decoration is relaxed (positions and cell) with the
candidates' own calculator (`dft.reference_cache`).

The starting cell is scaled so that the closest contact of every pair of species equals the sum of
their atomic radii (Slater's), so the relaxation starts near a sensible volume whatever the elements.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from pymatgen.core import Element, Lattice, Structure


@dataclass(frozen=True)
class Prototype:
    """A binary structure type: space group, cell shape (a = 1) and the A / B Wyckoff positions.

    `symmetric` marks types whose swapped decoration is the same structure (decorated once).
    """

    name: str
    spacegroup: str
    lattice: tuple[str, float, float]  # ("cubic" | "hexagonal" | "tetragonal", a, c)
    a_sites: tuple[tuple[float, float, float], ...]
    b_sites: tuple[tuple[float, float, float], ...]
    symmetric: bool = False

    def cell(self) -> Lattice:
        kind, a, c = self.lattice
        return {"cubic": lambda: Lattice.cubic(a), "hexagonal": lambda: Lattice.hexagonal(a, c),
                "tetragonal": lambda: Lattice.tetragonal(a, c)}[kind]()


# Ideal positions of the textbook structure types (International Tables settings used by pymatgen).
BINARY_PROTOTYPES: dict[str, Prototype] = {p.name: p for p in (
    Prototype("rocksalt", "Fm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0.5, 0.5, 0.5),), symmetric=True),
    Prototype("cscl", "Pm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0.5, 0.5, 0.5),), symmetric=True),
    Prototype("zincblende", "F-43m", ("cubic", 1, 1), ((0, 0, 0),), ((0.25, 0.25, 0.25),), symmetric=True),
    Prototype("wurtzite", "P6_3mc", ("hexagonal", 1, math.sqrt(8 / 3)), ((1 / 3, 2 / 3, 0),),
              ((1 / 3, 2 / 3, 0.375),), symmetric=True),
    Prototype("nias", "P6_3/mmc", ("hexagonal", 1, 1.39), ((0, 0, 0),), ((1 / 3, 2 / 3, 0.25),)),
    Prototype("fluorite", "Fm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0.25, 0.25, 0.25),)),
    Prototype("rutile", "P4_2/mnm", ("tetragonal", 1, 0.644), ((0, 0, 0),), ((0.305, 0.305, 0),)),
    Prototype("cdi2", "P-3m1", ("hexagonal", 1, 1.6), ((0, 0, 0),), ((1 / 3, 2 / 3, 0.25),)),
    Prototype("corundum", "R-3c", ("hexagonal", 1, 2.73), ((0, 0, 0.3523),), ((0.3064, 0, 0.25),)),
    Prototype("reo3", "Pm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0.5, 0, 0),)),  # the perovskite without A
    Prototype("l12", "Pm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0, 0.5, 0.5),)),  # Cu3Au, B = Cu
    # Co3O4 / Fe3O4: A on tetrahedral 8a and octahedral 16d, B on 32e (origin choice 1, pymatgen's setting)
    Prototype("spinel", "Fd-3m", ("cubic", 1, 1), ((0, 0, 0), (0.625, 0.625, 0.625)),
              ((0.3875, 0.3875, 0.3875),)),
)}
DEFAULT_PROTOTYPES: tuple[str, ...] = tuple(BINARY_PROTOTYPES)


def contact_radius(symbol: str) -> float:
    """Slater's atomic radius (A): a fair contact distance for ionic, covalent and metallic pairs alike."""
    element = Element(symbol)
    with warnings.catch_warnings():  # pymatgen warns when a radius is missing; we fall back
        warnings.simplefilter("ignore")
        radius = element.atomic_radius or element.atomic_radius_calculated or element.metallic_radius or 1.5
    return float(radius)


def scale_to_contacts(structure: Structure) -> Structure:
    """Scale the cell isotropically so the closest contact of any two sites is the sum of their radii."""
    radii = np.array([contact_radius(site.specie.symbol) for site in structure])
    reach = 2.0 * max(structure.lattice.abc)  # covers every nearest neighbour of these small cells
    centres, neighbours, _, distances = structure.get_neighbor_list(reach)
    apart = distances > 1e-6
    worst = float(np.min(distances[apart] / (radii[centres[apart]] + radii[neighbours[apart]])))
    scaled = structure.copy()
    scaled.scale_lattice(structure.volume / worst**3)
    return scaled


@lru_cache(maxsize=None)
def _conventional_sites(prototype: Prototype) -> tuple[Lattice, tuple[bool, ...], tuple[tuple[float, ...], ...]]:
    """The conventional cell of a structure type: its lattice, which sites are A sites, their fractional
    coordinates. Expanding the space group is the slow part of a decoration, and it does not depend on the
    elements, so it is done once per type (with two stand-in elements)."""
    species = ["Na"] * len(prototype.a_sites) + ["Cl"] * len(prototype.b_sites)
    coords = [list(s) for s in (*prototype.a_sites, *prototype.b_sites)]
    cell = Structure.from_spacegroup(prototype.spacegroup, prototype.cell(), species, coords)
    return cell.lattice, tuple(site.specie.symbol == "Na" for site in cell), tuple(map(tuple, cell.frac_coords))


@lru_cache(maxsize=4096)
def _decoration(prototype: Prototype, a: str, b: str) -> Structure:
    lattice, on_a, coords = _conventional_sites(prototype)
    conventional = Structure(lattice, [a if is_a else b for is_a in on_a], coords)
    # scale first: the primitive-cell search works with absolute (A) tolerances
    return scale_to_contacts(conventional).get_primitive_structure()


def decorate(prototype: Prototype, a: str, b: str) -> Structure:
    """The primitive cell of `prototype` with element `a` on its A sites and `b` on its B sites (a copy: the
    reference cache asks for the same decorations on every score run)."""
    return _decoration(prototype, a, b).copy()


def binary_decorations(a: str, b: str, names: tuple[str, ...] = DEFAULT_PROTOTYPES) -> dict[str, Structure]:
    """Every decoration of the pair: `{"<prototype>:<A-site element>-<B-site element>": structure}`."""
    if a == b:
        raise ValueError(f"a binary decoration needs two different elements, got {a!r} twice")
    unknown = sorted(set(names) - set(BINARY_PROTOTYPES))
    if unknown:
        raise ValueError(f"unknown prototype(s) {unknown}; known: {sorted(BINARY_PROTOTYPES)}")
    out: dict[str, Structure] = {}
    for name in names:
        prototype = BINARY_PROTOTYPES[name]
        orders = [(a, b)] if prototype.symmetric else [(a, b), (b, a)]
        for first, second in orders:
            out[f"{name}:{first}-{second}"] = decorate(prototype, first, second)
    return out


def element_pairs(chemical_systems: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair of elements inside some chemical system ("Nb-Co-O" -> Co-Nb, Co-O, Nb-O)."""
    pairs = {tuple(sorted(p)) for system in chemical_systems for p in combinations(set(system.split("-")), 2)}
    return sorted(pairs)  # type: ignore[arg-type]
