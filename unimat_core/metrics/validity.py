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


def _neutral_sum_reachable(states: Sequence[Sequence[int]], counts: Sequence[int]) -> bool:
    """Whether some choice of one state per element gives sum(q * n) == 0 (a set DP over partial sums)."""
    sums = {0}
    for options, n in zip(states, counts):
        sums = {s + q * n for s in sums for q in options}
        if not sums:
            return False
    return 0 in sums


@lru_cache(maxsize=65536)
def smact_valid(symbols: tuple[str, ...], counts: tuple[int, ...], use_pauling_test: bool = True,
                include_alloys: bool = True) -> bool:
    """CDVAE's smact_validity: some charge-neutral oxidation-state combination passes Pauling's test.

    CDVAE enumerates every combination of states (itertools.product), which is exponential in the
    number of elements: a poorly trained model's 60-element sample would never finish. The same
    answer comes from the structure of the test instead: Pauling's test holds exactly when some
    electronegativity cut puts every cation (q > 0) below it and every anion (q < 0) above it (state
    0 is unconstrained), so for each cut between distinct electronegativities we restrict the states
    accordingly and ask whether a neutral sum is reachable. Tests check it against the enumeration.
    """
    import smact

    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    elements = smact.element_dictionary(symbols)
    enegs = [elements[s].pauling_eneg for s in symbols]
    states: list[tuple[int, ...]] = [tuple(elements[s].oxidation_states_smact14 or ()) for s in symbols]
    if not use_pauling_test or any(e is None for e in enegs):  # missing data passes Pauling's test, as in CDVAE
        return _neutral_sum_reachable(states, counts)
    # smact gives noble gases a NaN electronegativity; every comparison with NaN is False, so in CDVAE's
    # test such an element never fails a pair: it may take any state at any cut
    levels = sorted({e for e in enegs if e == e})
    for cut in range(len(levels) + 1):  # cations below levels[cut], anions at or above it
        allowed = [options if e != e
                   else tuple(q for q in options if (q >= 0 if e < levels[cut] else q <= 0)) if cut < len(levels)
                   else tuple(q for q in options if q >= 0)
                   for options, e in zip(states, enegs)]
        if _neutral_sum_reachable(allowed, counts):
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
