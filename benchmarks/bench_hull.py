"""Hull scoring throughput: N candidates against an M-entry reference (real pymatgen phase diagrams).

Synthetic but realistic data: compositions drawn from 20 common elements (binaries and
ternaries, 1-4 atoms per element), reference energies = elemental energies + a random
formation energy in [-1.5, 0.2] eV/atom, candidates likewise (some below the hull).
Prints a markdown table. Usage: python benchmarks/bench_hull.py [--candidates 10000] [--reference 20000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from dft.hull import make_reference, score_candidates

ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Ti", "Zr", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
            "Al", "O", "S"]


def compositions(rng: np.random.Generator, n: int, n_systems: int) -> list[str]:
    systems = []
    while len(systems) < n_systems:
        k = rng.choice([2, 3], p=[0.4, 0.6])
        systems.append(tuple(sorted(rng.choice(ELEMENTS, k, replace=False))))
    out = []
    for _ in range(n):
        system = systems[rng.integers(len(systems))]
        out.append("".join(f"{el}{rng.integers(1, 5)}" for el in system))
    return out


def energies(rng, formulas, elemental, low, high):
    result = []
    for f in formulas:
        comp = Composition(f)
        corner = sum(comp.get_atomic_fraction(el) * elemental[str(el)] for el in comp.elements)
        result.append(corner + rng.uniform(low, high))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--systems", type=int, default=400, help="distinct chemical systems")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    elemental = {el: float(rng.uniform(-9, -1)) for el in ELEMENTS}
    ref_formulas = compositions(rng, args.reference - len(ELEMENTS), args.systems)
    reference = make_reference(
        [*ELEMENTS, *[f"r{i}" for i in range(len(ref_formulas))]],
        [*ELEMENTS, *ref_formulas],
        [*elemental.values(), *energies(rng, ref_formulas, elemental, -1.5, 0.2)], "synthetic")
    cand_formulas = compositions(np.random.default_rng(1), args.candidates, args.systems)
    candidates = pd.DataFrame({"id": [f"c{i}" for i in range(args.candidates)], "formula": cand_formulas,
                               "energy_per_atom": energies(rng, cand_formulas, elemental, -1.6, 0.3)})
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; "
          f"{len(candidates)} candidates in {candidates['formula'].map(lambda f: Composition(f).chemical_system).nunique()} "
          f"chemical systems, {len(reference)} reference entries\n")
    print("| workers | seconds | candidates/s | stable | metastable |")
    print("|---|---|---|---|---|")
    for workers in args.workers:
        start = time.perf_counter()
        scores = score_candidates(candidates, reference, n_workers=workers)
        seconds = time.perf_counter() - start
        print(f"| {workers} | {seconds:.1f} | {len(candidates) / seconds:.0f} | {int(scores['stable'].sum())} | "
              f"{int(scores['metastable'].sum())} |")


if __name__ == "__main__":
    main()
