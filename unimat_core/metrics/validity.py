"""Structural and compositional validity, as the CDVAE benchmark defines them.

Structural: every minimum-image distance between two different sites >= 0.5 A and the cell
volume >= 0.1 A^3 (CDVAE uses pymatgen's distance matrix, so a site's own periodic images are
not counted; we do the same so numbers stay comparable).

Compositional: SMACT charge neutrality plus the Pauling electronegativity test over every
combination of the elements' SMACT oxidation states, on the gcd-reduced counts. The states are
SMACT's original list (`Element.oxidation_states_smact14`, the file CDVAE's smact 2.x used as its
default; smact >= 3 defaults to an ICSD-2024 list that would change the numbers). Single-element
and all-metal (alloy) compositions are valid. Missing electronegativity data passes the
Pauling test, as in CDVAE.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Element, Structure

MIN_DISTANCE = 0.5  # A
MIN_VOLUME = 0.1  # A^3


def finite_reason(structure: Structure) -> str | None:
    """Why a structure cannot be measured at all (non-finite lattice/coordinates, no sites), or None."""
    if len(structure) == 0:
        return "structure has no sites"
    if not np.all(np.isfinite(structure.lattice.matrix)):
        return "non-finite lattice"
    if not np.all(np.isfinite(structure.frac_coords)):
        return "non-finite coordinates"
    return None


def structure_validity(structure: Structure, cutoff: float = MIN_DISTANCE,
                       min_volume: float = MIN_VOLUME) -> tuple[bool, str | None]:
    """(valid, reason): all pairwise periodic distances >= cutoff and volume >= min_volume."""
    reason = finite_reason(structure)
    if reason:
        return False, reason
    volume = structure.volume
    if not volume >= min_volume:
        return False, f"cell volume {volume:.3g} A^3 < {min_volume}"
    if len(structure) > 1:
        distances = structure.distance_matrix
        np.fill_diagonal(distances, np.inf)
        shortest = float(distances.min())
        if not shortest >= cutoff:
            return False, f"atoms {shortest:.3f} A apart (< {cutoff} A)"
    return True, None


def reduced_counts(composition: Composition) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Element symbols (by Z) and integer counts divided by their gcd, as CDVAE does."""
    amounts = composition.element_composition.get_el_amt_dict()
    symbols = tuple(sorted(amounts, key=lambda s: Element(s).Z))
    counts = [amounts[s] for s in symbols]
    if any(abs(c - round(c)) > 1e-6 for c in counts):
        raise ValueError(f"fractional site occupancies in {composition.formula}")
    ints = [int(round(c)) for c in counts]
    divisor = math.gcd(*ints) or 1
    return symbols, tuple(c // divisor for c in ints)


@lru_cache(maxsize=65536)
def smact_valid(symbols: tuple[str, ...], counts: tuple[int, ...], use_pauling_test: bool = True,
                include_alloys: bool = True) -> bool:
    """CDVAE's smact_validity: some charge-neutral oxidation-state combination passes Pauling's test."""
    import smact
    from smact.screening import pauling_test

    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    elements = smact.element_dictionary(symbols)
    electronegativities = [elements[s].pauling_eneg for s in symbols]
    oxidation_states: Sequence[Sequence[int]] = [elements[s].oxidation_states_smact14 or () for s in symbols]
    for states in itertools.product(*oxidation_states):
        if sum(q * n for q, n in zip(states, counts)) != 0:
            continue
        if not use_pauling_test:
            return True
        try:
            if pauling_test(states, electronegativities):
                return True
        except TypeError:  # an element without electronegativity data: CDVAE counts it as passing
            return True
    return False


def composition_validity(composition: Composition) -> tuple[bool, str | None]:
    """(valid, reason) for a composition (SMACT charge neutrality + Pauling test)."""
    try:
        symbols, counts = reduced_counts(composition)
    except ValueError as exc:
        return False, str(exc)
    if not symbols:
        return False, "empty composition"
    try:
        valid = smact_valid(symbols, counts)
    except (KeyError, NameError, ValueError) as exc:
        return False, f"no SMACT data for {'-'.join(symbols)}: {exc}"
    formula = "".join(f"{s}{c if c > 1 else ''}" for s, c in zip(symbols, counts))
    return valid, None if valid else f"{formula} fails SMACT charge neutrality/electronegativity"
