"""AIRSS-style random structure generation: the baseline UniMat must beat at finding low-energy crystals.

Like AIRSS's `buildcell`, each candidate gets
- a volume drawn around a target made from the atoms' own sizes (sum of atomic-radius spheres
  divided by a packing fraction, times a random factor),
- a random cell shape (angles in [60, 120] degrees, length ratios in [1/2, 2], scaled to that
  volume, flat cells rejected),
- atoms placed one by one at random fractional positions, each kept only if it is at least
  `min_distance_factor * (r_i + r_j)` from every atom already placed, periodic images included.
No symmetry is imposed (AIRSS's plain mode); every structure has exactly the requested composition.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import ConfigDict
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.periodic_table import Element

from unimat_core.lattice_encoding import reduced_volume_squared
from unimat_core.settings import Config
from unimat_core.structure_table import CORE_COLUMNS, describe, structure_to_json


class RandomStructureError(RuntimeError):
    """No structure satisfying the distance rule was found within the attempt budget."""


class RandomStructureConfig(Config):
    model_config = ConfigDict(frozen=True)

    packing_fraction: float = 0.45
    volume_jitter: float = 0.2            # volume factor drawn from [1 - j, 1 + j]
    min_distance_factor: float = 0.7      # d_ij >= factor * (r_i + r_j)
    angle_range: tuple[float, float] = (60.0, 120.0)
    max_length_ratio: float = 2.0
    min_shape_factor: float = 0.5         # V / (abc) lower bound: rejects flat cells
    attempts_per_atom: int = 200
    max_restarts: int = 200


def _radius(element: Element) -> float:
    radius = element.atomic_radius or element.atomic_radius_calculated or 1.5
    return float(radius)


def _random_lattice(volume: float, config: RandomStructureConfig, rng: np.random.Generator) -> Lattice:
    for _ in range(1000):
        angles = rng.uniform(*config.angle_range, size=3)
        shape = reduced_volume_squared(np.array([[1, 1, 1, *angles]]))[0]
        if shape <= config.min_shape_factor**2:
            continue
        ratios = np.exp(rng.uniform(-math.log(config.max_length_ratio) / 2, math.log(config.max_length_ratio) / 2, size=3))
        scale = (volume / (np.prod(ratios) * math.sqrt(shape))) ** (1 / 3)
        return Lattice.from_parameters(*(ratios * scale), *angles)
    raise RandomStructureError("could not draw a cell shape within the angle and flatness limits")


def _min_periodic_distance(lattice: Lattice, frac: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distances from one fractional point to each of `others` under periodic boundary conditions."""
    if len(others) == 0:
        return np.zeros(0)
    return lattice.get_all_distances(frac[None], others)[0]


def random_structure(formula: str, rng: np.random.Generator, config: RandomStructureConfig = RandomStructureConfig()) -> Structure:
    """One random crystal with exactly the composition of `formula` (a full cell, e.g. "Sr2Ti2O6")."""
    composition = Composition(formula)
    species: list[Element] = []
    for element, amount in composition.items():
        if abs(amount - round(amount)) > 1e-6:
            raise ValueError(f"{formula!r}: {element} count {amount} is not an integer (give the full cell)")
        species += [Element(str(element))] * int(round(amount))
    radii = np.array([_radius(e) for e in species])
    sphere_volume = float(np.sum(4 / 3 * math.pi * radii**3))

    for _ in range(config.max_restarts):
        volume = sphere_volume / config.packing_fraction * rng.uniform(1 - config.volume_jitter, 1 + config.volume_jitter)
        lattice = _random_lattice(volume, config, rng)
        if min(lattice.get_lll_reduced_lattice().abc) < 2 * config.min_distance_factor * radii.max():
            continue  # an atom would touch its own periodic image
        order = rng.permutation(len(species))
        placed_frac: list[np.ndarray] = []
        placed_index: list[int] = []
        for index in order:
            for _ in range(config.attempts_per_atom):
                candidate = rng.random(3)
                distances = _min_periodic_distance(lattice, candidate, np.array(placed_frac).reshape(-1, 3))
                required = config.min_distance_factor * (radii[index] + radii[placed_index])
                if np.all(distances >= required):
                    placed_frac.append(candidate)
                    placed_index.append(index)
                    break
            else:
                break  # this atom found no room: start over with a new cell
        if len(placed_index) == len(species):
            return Structure(lattice, [species[i] for i in placed_index], np.array(placed_frac))
    raise RandomStructureError(f"{formula!r}: no structure met the distance rule after {config.max_restarts} cells")


def min_distance_ratio(structure: Structure) -> float:
    """min over atom pairs of d_ij / (r_i + r_j), periodic images included (the quantity the rule bounds)."""
    radii = np.array([_radius(Element(str(site.specie))) for site in structure])
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    ratios = distances / (radii[:, None] + radii[None, :])
    self_image = min(structure.lattice.get_lll_reduced_lattice().abc) / (2 * radii.max())
    return float(min(ratios.min(), self_image)) if len(structure) > 1 else self_image


CANDIDATE_EXTRA = ("valid", "reason", "target_formula", "trial", "seconds")


def candidate_rng(seed: int, formula: str, trial: int) -> np.random.Generator:
    """A generator keyed by (seed, formula, trial): each candidate is reproducible on its own, whatever else is asked for."""
    return np.random.default_rng([seed, zlib.crc32(formula.encode()), trial])


def random_candidates(formulas: Sequence[str], n_per: int, seed: int = 0,
                      config: RandomStructureConfig = RandomStructureConfig(), id_prefix: str = "random") -> pd.DataFrame:
    """`n_per` random crystals per formula as one structure table (ids `<prefix>-<formula>-<trial>`).

    Extra columns: valid, reason, target_formula, trial, seconds (time to build that candidate).
    A candidate that cannot be built (bad formula, no room under the distance rule) is a row with
    valid=False, no structure and the reason: one hard formula never costs the others their candidates.
    """
    if n_per < 1:
        raise ValueError("n_per must be >= 1")
    rows = []
    for formula in formulas:
        for trial in range(n_per):
            start = time.perf_counter()
            row = {"id": f"{id_prefix}-{formula}-{trial:03d}", "split": "", "source": "random_structures",
                   "target_formula": formula, "trial": trial}
            try:
                structure = random_structure(formula, candidate_rng(seed, formula, trial), config)
            except (RandomStructureError, ValueError) as exc:
                row.update(formula=None, reduced_formula=None, chemsys=None, n_sites=0, n_elements=0, structure=None,
                           valid=False, reason=f"{type(exc).__name__}: {exc}")
            else:
                row.update(describe(structure), structure=structure_to_json(structure), valid=True, reason="")
            rows.append({**row, "seconds": time.perf_counter() - start})
    frame = pd.DataFrame(rows, columns=[*CORE_COLUMNS, *CANDIDATE_EXTRA])
    return frame.astype({"n_sites": "int32", "n_elements": "int32", "trial": "int32", "valid": bool})
