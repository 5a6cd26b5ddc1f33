"""Relaxation throughput on this machine (structures/minute), plus one timed GPAW relaxation.

Candidates are imitated by perturbing bundled test-split crystals (3% random cell strain,
0.05 A site rattle): the bundled ones are already DFT-relaxed, so relaxing them unperturbed
would flatter every number. Runs real CHGNet/SevenNet with their shipped weights.
Prints a markdown table. Run under `flock /tmp/unimat-cpu.lock` (the CPU is shared).

Usage: python benchmarks/bench_relax.py [--perov 100] [--carbon 40] [--skip-gpaw] [--skip-sevennet] [--optimizer BFGS]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure

from dft.batch import read_relaxed, relax_table
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig, relax_structure
from unimat_core.datasets.bundled import bundled_csv_paths
from unimat_core.datasets.cdvae_csv import parse_cif
from unimat_core.structure_table import records_to_frame, structure_from_json


def perturbed_sample(name: str, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` test-split crystals drawn with `seed`, perturbed (only the drawn CIFs are parsed)."""
    table = pd.read_csv(bundled_csv_paths(name)["test"], usecols=["material_id", "cif"]).sample(n, random_state=seed)
    rng = np.random.default_rng(seed)
    structures = []
    for i, cif in enumerate(table["cif"]):
        s = structure_from_json(parse_cif(cif)["structure"])
        strain = rng.uniform(-0.03, 0.03, size=(3, 3))
        s.apply_strain((strain + strain.T) / 2)  # pymatgen keeps the diagonal: each axis by its own factor
        s.perturb(0.05, seed=seed * 1_000_003 + i)  # seeded: every path and rerun relaxes the same cells
        structures.append(s)
    return records_to_frame(structures, table["material_id"].astype(str).tolist(), source=f"bench:{name}")


def run(frame: pd.DataFrame, calculator: CalculatorConfig, config: RelaxConfig, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        relax_table(frame, out, calculator=calculator, config=config, chunk_size=max(1, len(frame) // (4 * workers)),
                    n_workers=workers)
        seconds = time.perf_counter() - start
        rows = read_relaxed(out)
    return {"n": len(frame), "seconds": seconds, "per_min": 60 * len(frame) / seconds,
            "converged": rows["converged"].mean(), "steps": rows["steps"].median()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--perov", type=int, default=100)
    parser.add_argument("--carbon", type=int, default=40)
    parser.add_argument("--skip-gpaw", action="store_true")
    parser.add_argument("--skip-sevennet", action="store_true")
    parser.add_argument("--optimizer", choices=["FIRE", "BFGS"], default="FIRE")
    args = parser.parse_args()
    config = RelaxConfig(fmax=0.05, max_steps=500, optimizer=args.optimizer, time_limit_s=300)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; {config}\n")
    print("| data | calculator | path | structures | wall s (incl. model load) | structures/min | "
          "converged | median steps |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [("perov_5", args.perov, "chgnet", 1), ("perov_5", args.perov, "chgnet", 2),
             ("carbon_24", args.carbon, "chgnet", 1), ("carbon_24", args.carbon, "chgnet", 2)]
    if not args.skip_sevennet:
        cases += [("perov_5", max(10, args.perov // 4), "sevennet", 1), ("perov_5", args.perov, "sevennet", 2)]
    for data, n, calc, workers in cases:
        frame = perturbed_sample(data, n)
        r = run(frame, CalculatorConfig(calc, device="cpu"), config, workers)
        path = "one-by-one, 1 process" if workers == 1 else f"{workers} worker processes (1 thread each)"
        print(f"| {data} | {calc} | {path} | {r['n']} | {r['seconds']:.1f} | {r['per_min']:.0f} | "
              f"{r['converged']:.0%} | {r['steps']:.0f} |", flush=True)
    if not args.skip_gpaw:
        si = Structure(Lattice.from_parameters(3.90, 3.90, 3.90, 60, 60, 60), ["Si", "Si"],
                       [[0, 0, 0], [0.26, 0.25, 0.25]])
        result = relax_structure(si, CalculatorConfig("gpaw"),
                                 RelaxConfig(fmax=0.05, max_steps=20, relax_cell=False, time_limit_s=900))
        print(f"| Si (2 atoms, a=5.52 A, one atom displaced) | gpaw PBE PW 300 eV, k-density 2 | positions only | 1 | "
              f"{result.wall_time_s:.1f} | {60 / result.wall_time_s:.1f} | {result.converged} | {result.steps} |")


if __name__ == "__main__":
    main()
