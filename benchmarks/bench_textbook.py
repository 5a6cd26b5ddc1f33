"""Textbook formation energies (MgO, NaCl, Al2O3) of each universal potential against MP's values.

Relaxes the elemental prototypes of Mg, O, Na, Cl, Al and the rock-salt / corundum decorations of Mg-O,
Na-Cl, Al-O with each calculator (through the same prototype cache as the score stage), then prints per
compound: the formation energy facing MP's hull (on MP's scale against MP's elements), with the opposite
correction choice (what a scale mix-up gives), and on the offline hull (the calculator's own elements),
next to the reference value; and each element's ground state against MP's.

    python benchmarks/bench_textbook.py [--calculators chgnet sevennet] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dft.calculators import CalculatorConfig, energy_scale  # noqa: E402
from dft.energy_scale import on_hull_scale, plan_scales  # noqa: E402
from dft.hull import reference_from_relaxed  # noqa: E402
from dft.reference_cache import ReferenceCache  # noqa: E402
from dft.reference_checks import elemental_deviation, textbook_report  # noqa: E402
from dft.relax import RelaxConfig  # noqa: E402
from tasks.artifacts import markdown_table  # noqa: E402

SYSTEMS = ["Mg", "O", "Na", "Cl", "Al", "Mg-O", "Na-Cl", "Al-O"]
PROTOTYPES = ("rocksalt", "corundum")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calculators", nargs="+", default=["chgnet", "sevennet"])
    parser.add_argument("--cache", default=None, help="prototype cache folder (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.cache or tempfile.mkdtemp(prefix="bench-textbook-"))
    relax = RelaxConfig(fmax=0.05, max_steps=300, optimizer="BFGS", time_limit_s=120)
    for name in args.calculators:
        calculator = CalculatorConfig(name, device="cpu")
        scale = energy_scale(calculator)
        cache = ReferenceCache(root, calculator, relax, PROTOTYPES)
        start = time.perf_counter()
        built = cache.ensure(SYSTEMS)
        relaxed = cache.read(SYSTEMS)
        print(f"## {name} ({scale}): {built['n_relaxed']} relaxations in {time.perf_counter() - start:.0f} s, "
              f"{int(relaxed['converged'].sum())} converged\n")
        print(markdown_table(textbook_report(relaxed, scale)))
        own = plan_scales(scale, scale)
        hull, _ = on_hull_scale(reference_from_relaxed(relaxed, scale=scale), own.correct_reference)
        print(markdown_table(elemental_deviation(hull)))


if __name__ == "__main__":
    main()
