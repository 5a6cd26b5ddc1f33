"""Elemental ground states relaxed with the candidates' own calculator (the offline hull's corners).

The bundled MP elemental reference file holds plain `ComputedEntry` dicts without structures, so
ground states are searched over simple prototypes instead: fcc, bcc, hcp, simple cubic and
diamond for every element (lattice constants scaled from the atomic radius), plus an isolated
dimer in a 10 A box (positions only) for H, N, O, F, Cl, Br, I. Each is relaxed; the lowest
energy per atom wins. This misses complex ground states (e.g. alpha-Mn, alpha-Ga, black P,
rhombohedral B); their energies are upper bounds, which biases formation energies of compounds
with those elements downwards by the error. Documented in the `prototype` column.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import pandas as pd
from pymatgen.core import Element, Lattice, Structure

from dft.calculators import BuiltCalculator, CalculatorConfig, build_once
from dft.engine import relax_structures
from dft.relax import RelaxConfig
from unimat_core.structure_table import records_to_frame

DIATOMIC = ("H", "N", "O", "F", "Cl", "Br", "I")
BOX = 10.0


def _radius(element: Element) -> float:
    with warnings.catch_warnings():  # pymatgen warns when a radius is missing; we fall back
        warnings.simplefilter("ignore")
        radius = element.metallic_radius or element.atomic_radius or 1.5
    return float(radius)


def elemental_prototypes(symbol: str) -> dict[str, Structure]:
    """Candidate ground-state cells for one element."""
    element = Element(symbol)
    r = _radius(element)
    fcc_a, bcc_a, sc_a, dia_a = 2 * math.sqrt(2) * r, 4 * r / math.sqrt(3), 2 * r, 8 * r / math.sqrt(3)
    hcp_a = 2 * r
    protos = {
        "fcc": Structure(Lattice.cubic(fcc_a), [symbol] * 4,
                         [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        "bcc": Structure(Lattice.cubic(bcc_a), [symbol] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "hcp": Structure(Lattice.hexagonal(hcp_a, hcp_a * math.sqrt(8 / 3)), [symbol] * 2,
                         [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        "sc": Structure(Lattice.cubic(sc_a), [symbol], [[0, 0, 0]]),
        "diamond": Structure(Lattice.cubic(dia_a), [symbol] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]]),
    }
    protos["fcc"] = protos["fcc"].get_primitive_structure()
    if symbol in DIATOMIC:
        bond = max(2 * float(element.atomic_radius or 0.7), 0.74)  # O: 1.2 A, Cl: 2.0 A (exp. 1.21, 1.99)
        protos["dimer"] = Structure(Lattice.cubic(BOX), [symbol] * 2, [[0, 0, 0], [bond / BOX, 0, 0]])
    return protos


def elemental_references(
    elements: Iterable[str],
    calculator: CalculatorConfig | BuiltCalculator = CalculatorConfig(),
    config: RelaxConfig = RelaxConfig(),
) -> pd.DataFrame:
    """Relax every prototype of every element; returns one row per element (its lowest energy).

    All bulk prototypes go to the relaxation engine in one call (one batch for ML potentials), the
    dimers (positions only) in a second.

    The rows follow dft.batch's relaxed-table layout (structure table + result columns) plus
    `prototype`, so they can go straight into `dft.hull.reference_from_relaxed`. Elements whose
    prototypes all fail are left out (the hull then reports them as missing per candidate).
    """
    built = build_once(calculator)
    cases = [(symbol, name, proto) for symbol in sorted(set(elements))
             for name, proto in elemental_prototypes(symbol).items()]
    by_case = {}
    for dimers in (False, True):
        group = [(symbol, name, proto) for symbol, name, proto in cases if (name == "dimer") == dimers]
        run = config.model_copy(update={"relax_cell": config.relax_cell and not dimers})
        relaxed = relax_structures([proto for _, _, proto in group], built, run)
        by_case.update({(symbol, name): result for (symbol, name, _), result in zip(group, relaxed)})
    best: dict[str, tuple] = {}
    for (symbol, name), result in by_case.items():
        usable = result.converged or (result.error.startswith("not converged") and result.max_force < 0.5)
        if usable and (symbol not in best or result.energy_per_atom < best[symbol][1].energy_per_atom):
            best[symbol] = (name, result)
    rows = [(symbol, *best[symbol]) for symbol in sorted(best)]
    if not rows:
        raise ValueError("no elemental reference could be relaxed")
    results = [r for _, _, r in rows]
    properties = {k: [r.properties()[k] for r in results] for k in results[0].properties()}
    properties["prototype"] = [name for _, name, _ in rows]
    properties["converged"] = [True] * len(rows)  # accepted as the element's reference (see usable)
    return records_to_frame([r.structure for r in results], [f"elemental:{s}:{n}" for s, n, _ in rows],
                            source="elemental-prototypes", properties=properties)
