"""Sanity checks of a hull on MP's scale: its elements against MP's, its textbook binaries against known values.

A hull built from relaxed prototypes is only as good as the calculator and the prototypes. Two cheap
checks catch a wrong scale or a broken relaxation: the hull's elemental energies against the bundled
Materials Project elemental references (2023-02-07, MP2020 scale; elements carry no correction), and
the formation energies of textbook binaries against the values below.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from dft.energy_scale import MP2020_SCALE, EnergyScale, on_hull_scale, plan_scales
from dft.hull import reference_from_relaxed

MP_ELEMENTS_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"

# Formation energies (eV/atom) of textbook binaries. MP: the Materials Project's GGA/GGA+U + MP2020 values
# (MgO mp-1265 as measured for issue 17; Al2O3 mp-1143 from its materials page); NaCl: experiment (NIST-JANAF
# -411.2 kJ/mol), MP's own value was not available offline. MP2020 is fitted to experimental formation
# enthalpies, so MP and experiment agree to a few 10 meV/atom on these.
TEXTBOOK_FORMATION = {"MgO": (-3.05, "MP mp-1265"), "Al2O3": (-3.44, "MP mp-1143"), "NaCl": (-2.13, "experiment")}


@lru_cache(maxsize=1)
def mp_elemental_energies() -> dict[str, float]:
    """MP's lowest energy per atom of each element (eV/atom, MP2020 scale), from the bundled file."""
    path = resources.files("unimat_core") / "data" / "reference" / MP_ELEMENTS_FILE
    data = json.loads(gzip.decompress(path.read_bytes()))
    return {symbol: entry["energy"] / sum(entry["composition"].values()) for symbol, entry in data.items()}


def _elemental_minima(reference: pd.DataFrame) -> dict[str, float]:
    minima: dict[str, float] = {}
    for formula, energy in zip(reference["composition"], reference["energy_per_atom"]):
        composition = Composition(formula)
        if len(composition.elements) == 1:
            symbol = str(composition.elements[0])
            minima[symbol] = min(minima.get(symbol, np.inf), float(energy))
    return minima


def elemental_deviation(reference: pd.DataFrame) -> pd.DataFrame:
    """Per element of the hull: its lowest energy, MP's, and the difference (eV/atom)."""
    mp = mp_elemental_energies()
    rows = [{"element": el, "energy_per_atom": e, "mp_energy_per_atom": mp.get(el, np.nan),
             "difference": e - mp.get(el, np.nan)} for el, e in sorted(_elemental_minima(reference).items())]
    return pd.DataFrame(rows, columns=["element", "energy_per_atom", "mp_energy_per_atom", "difference"])


def formation_energy(energy_per_atom: float, formula: str, elements: dict[str, float]) -> float:
    """Energy per atom minus the composition-weighted elemental energies (NaN when an element is missing)."""
    composition = Composition(formula)
    return float(energy_per_atom) - sum(composition.get_atomic_fraction(el) * elements.get(str(el), np.nan)
                                        for el in composition.elements)


def textbook_check(reference: pd.DataFrame, elements: dict[str, float] | None = None) -> pd.DataFrame:
    """Formation energy of the lowest entry of each textbook binary present in the hull, against its known value.

    `elements` defaults to the hull's own elemental minima (the offline hull's corners); pass
    `mp_elemental_energies()` to measure against MP's elements instead."""
    elements = _elemental_minima(reference) if elements is None else elements
    reduced = [Composition(c).reduced_formula for c in reference["composition"]]
    rows = []
    for formula, (known, source) in TEXTBOOK_FORMATION.items():
        energies = [float(e) for r, e in zip(reduced, reference["energy_per_atom"]) if r == formula]
        if energies:
            value = formation_energy(min(energies), formula, elements)
            rows.append({"formula": formula, "formation_energy_per_atom": value, "known": known, "known_source": source,
                         "difference": value - known})
    return pd.DataFrame(rows, columns=["formula", "formation_energy_per_atom", "known", "known_source", "difference"])


def textbook_report(relaxed: pd.DataFrame, scale: EnergyScale) -> pd.DataFrame:
    """Textbook formation energies of relaxed rows (elements + compounds of one calculator on `scale`), three ways:

    `vs_mp`: the compound on MP's scale (per `plan_scales`) against MP's own elements, as when facing MP's hull;
    `vs_mp_other_treatment`: the same with the opposite correction choice (raw left raw, or corrected twice);
    `offline`: compound and the calculator's own elements, both on the offline hull's scale.
    A scale that cannot face MP raises `ScaleMismatch`."""
    reference = reference_from_relaxed(relaxed, scale=scale)
    facing = plan_scales(scale, MP2020_SCALE)
    mp = mp_elemental_energies()
    columns = {}
    treatments = (("vs_mp", facing.correct_candidates), ("vs_mp_other_treatment", not facing.correct_candidates))
    for label, correct in treatments:
        on_scale, _ = on_hull_scale(reference, correct)
        columns[label] = textbook_check(on_scale, mp).set_index("formula")["formation_energy_per_atom"]
    hull, _ = on_hull_scale(reference, plan_scales(scale, scale).correct_reference)
    columns["offline"] = textbook_check(hull).set_index("formula")["formation_energy_per_atom"]
    report = pd.DataFrame(columns)
    report["known"] = [TEXTBOOK_FORMATION[f][0] for f in report.index]
    report["known_source"] = [TEXTBOOK_FORMATION[f][1] for f in report.index]
    return report.rename_axis("formula").reset_index()
