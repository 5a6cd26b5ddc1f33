"""Generation-metrics benchmark: 10,000 generated perov_5 structures against the test split.

    python benchmarks/bench_metrics.py --mode cold     # reference fingerprints computed (cache entry removed first)
    python benchmarks/bench_metrics.py --mode warm     # reference fingerprints from the on-disk cache
    python benchmarks/bench_metrics.py --generated benchmarks/runs/perov_5/quality/generated --mode warm

Without --generated, the "generated" set is test-split structures drawn with replacement and
perturbed (random lattice strain + Gaussian rattle), a stand-in until a real model's samples
exist; it is written once to benchmarks/runs/<dataset>/metrics/. Novelty is measured against the
val split (the split bench_model.py trains on). Run it under `flock /tmp/unimat-cpu.lock` (the CPU
is shared). Prints a markdown table with wall time and CPU time (parent + pool workers: on a busy
machine the CPU time is the load-independent number); record it in benchmarks/RESULTS.md with the
machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))


def _split(dataset: str, split: str, work: Path) -> pd.DataFrame:
    """A bundled split as a structure table, parsed from CIF once and kept as parquet."""
    from unimat_core.datasets import load_bundled
    from unimat_core.structure_table import read_structures, write_structures

    path = work / f"{split}.parquet"
    if not path.exists():
        write_structures(load_bundled(dataset, splits=(split,)).structures, path)
    return read_structures(path)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def perturbed(reference: pd.DataFrame, n: int, seed: int, strain: float, rattle: float) -> pd.DataFrame:
    """`n` reference structures (with replacement) with random strain (std `strain`) and rattle (std `rattle` A)."""
    from pymatgen.core import Lattice

    from unimat_core.structure_table import records_to_frame, structures_of

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(reference), n)
    sources = structures_of(reference.iloc[np.unique(picks)])
    by_row = dict(zip(np.unique(picks), sources))
    out = []
    for row in picks:
        structure = by_row[row].copy()
        deformation = np.eye(3) + rng.normal(0, strain, (3, 3))
        structure.lattice = Lattice(structure.lattice.matrix @ deformation)
        cart = structure.cart_coords + rng.normal(0, rattle, (len(structure), 3))
        for i, xyz in enumerate(cart):
            structure.replace(i, structure[i].species, xyz, coords_are_cartesian=True)
        out.append(structure)
    return records_to_frame(out, [f"pert-{i:05d}" for i in range(n)], source=f"perturbed:strain{strain}:rattle{rattle}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="perov_5")
    parser.add_argument("--generated", help="a generation folder (part-*.parquet) to evaluate instead")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--mode", choices=("cold", "warm"), default="warm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--coverage-on", choices=("all", "subset"), default="all")
    parser.add_argument("--strain", type=float, default=0.03)
    parser.add_argument("--rattle", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-limit", type=int, help="smoke test: only the first N reference rows")
    args = parser.parse_args()

    from unimat_core.metrics import MetricsConfig, evaluate_structures, write_metrics
    from unimat_core.metrics import cache as metrics_cache
    from unimat_core.model.generation import read_generated

    work = ROOT / "runs" / args.dataset / "metrics"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reference = _split(args.dataset, "test", work)
    training = _split(args.dataset, "val", work)
    if args.reference_limit:
        reference, training = reference.iloc[: args.reference_limit], training.iloc[: args.reference_limit]
    if args.generated:
        generated, label = read_generated(args.generated), f"generated: {args.generated}"
    else:
        path = work / f"perturbed-{args.n}-s{args.seed}.parquet"
        if not path.exists():
            perturbed(reference, args.n, args.seed, args.strain, args.rattle).to_parquet(path, index=False)
        generated = pd.read_parquet(path)
        label = f"generated: {args.n} perturbed test structures (strain {args.strain}, rattle {args.rattle} A)"
    prep = time.perf_counter() - start

    cache_dir = work / "cache"
    if args.mode == "cold":
        key = metrics_cache.table_key(reference["id"], reference["structure"])
        shutil.rmtree(metrics_cache.entry_dir(cache_dir, key), ignore_errors=True)
    config = MetricsConfig(dataset=args.dataset, n_workers=args.workers, cache_dir=str(cache_dir),
                           coverage_on=args.coverage_on, seed=args.seed)
    load_before = os.getloadavg()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    result = evaluate_structures(generated, reference, training, config)
    total = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before  # the pool's workers are joined (and counted) when it closes
    load_after = os.getloadavg()
    out = work / f"result-{args.mode}"
    write_metrics(result, out)

    s = result.summary
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1-min)")
    print(f"{label}; reference: {len(reference)} {args.dataset} test; training (novelty): {len(training)} val; "
          f"input preparation {prep:.0f} s (not timed below)")
    timing = pd.DataFrame([{
        "mode": args.mode, "coverage on": args.coverage_on, "workers": args.workers, "generated": s["n_generated"],
        "total (s)": round(total), "CPU (s)": round(cpu), "checks (s)": round(s["seconds_check"]),
        "generated fingerprints (s)": round(s["seconds_fingerprints"]),
        "reference fingerprints (s)": round(s["seconds_reference"]), "uniqueness+novelty (s)": round(s["seconds_matching"]),
        "reference cached": bool(s["reference_cached"]),
    }])
    print(timing.to_markdown(index=False))
    print()
    print(result.markdown())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
