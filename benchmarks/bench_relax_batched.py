"""Batched vs one-by-one relaxation, side by side in one run (issue 16's goals); prints markdown tables.

1. Agreement: the same perturbed test crystals (default 200 perov_5 and 50 carbon_24) relaxed by the
   batched engine and by the one-by-one ASE path in this process: same converged / not-converged
   verdicts, converged energies within 2 meV/atom. Disagreements are listed.
2. Throughput: perturbed perov_5 and carbon_24 cells (default 1,000 each) through `dft.batch.relax_table`
   (chunks, part files, worker processes: what the relax stage runs), batched and one by one.
   `--one-by-one-limit N` times the one-by-one path on the first N cells only (its rate is then
   extrapolated, and the table says so).

Cells: `bench_relax.perturbed_sample` (bundled test-split crystals, each axis strained up to 3 %, every
site rattled by 0.05 A, seeded), relaxed with the real CHGNet weights (or `--calculator sevennet`):
fmax 0.05 eV/A on atoms and cell, cell relaxed, <= 500 steps. Wall times include model loading and
worker start-up; CPU seconds (this process and its workers) are printed beside them, so a run on a
busy machine still compares the two paths. Run on an otherwise idle machine for the wall times.

Usage: python benchmarks/bench_relax_batched.py [--agree-perov 200] [--agree-carbon 50] [--perov 1000]
           [--carbon 1000] [--optimizer FIRE|BFGS] [--workers 1 2] [--one-by-one-limit N] [--chunk-size 50]
           [--cpu-threads 1] [--calculator chgnet|sevennet] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relax import perturbed_sample  # noqa: E402

from dft.batch import read_relaxed, relax_table  # noqa: E402
from dft.calculators import CalculatorConfig, build_calculator  # noqa: E402
from dft.engine import relax_structures  # noqa: E402
from dft.relax import RelaxConfig  # noqa: E402
from unimat_core.structure_table import structure_from_json  # noqa: E402

TOLERANCE = 0.002  # eV/atom


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished (joined) children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def agreement(frame: pd.DataFrame, built, config: RelaxConfig) -> tuple[dict, pd.DataFrame]:
    """Relax `frame` both ways in this process; counts and the per-crystal comparison."""
    structures = [structure_from_json(text) for text in frame["structure"]]
    timed = {}
    for engine in ("batched", "ase"):
        start, cpu = time.perf_counter(), cpu_seconds()
        results = relax_structures(structures, built, config.model_copy(update={"engine": engine}))
        timed[engine] = (time.perf_counter() - start, cpu_seconds() - cpu, results)
    (t_b, cpu_b, batched), (t_a, cpu_a, alone) = timed["batched"], timed["ase"]
    table = pd.DataFrame({
        "id": frame["id"], "formula": frame["formula"],
        "converged_batched": [r.converged for r in batched], "converged_ase": [r.converged for r in alone],
        "epa_batched": [r.energy_per_atom for r in batched], "epa_ase": [r.energy_per_atom for r in alone],
        "steps_batched": [r.steps for r in batched], "steps_ase": [r.steps for r in alone],
        "error_batched": [r.error for r in batched], "error_ase": [r.error for r in alone]})
    table["abs_de_mev"] = (table["epa_batched"] - table["epa_ase"]).abs() * 1000
    both = table[table["converged_batched"] & table["converged_ase"]]
    return {"n": len(table), "same_verdict": int((table["converged_batched"] == table["converged_ase"]).sum()),
            "both_converged": len(both), "within": int((both["abs_de_mev"] <= TOLERANCE * 1000).sum()),
            "median_de": float(both["abs_de_mev"].median()) if len(both) else float("nan"),
            "max_de": float(both["abs_de_mev"].max()) if len(both) else float("nan"),
            "batched_s": t_b, "ase_s": t_a, "batched_cpu": cpu_b, "ase_cpu": cpu_a, "steps_batched": int(table["steps_batched"].sum()),
            "steps_ase": int(table["steps_ase"].sum())}, table


def throughput(frame: pd.DataFrame, calculator: CalculatorConfig, config: RelaxConfig, workers: int,
               chunk_size: int) -> dict:
    """Wall time of `relax_table` over `frame` (what the relax stage runs), with its outcome counts."""
    with tempfile.TemporaryDirectory(prefix="bench-relax-batched-") as out:
        start, cpu = time.perf_counter(), cpu_seconds()
        relax_table(frame, out, calculator=calculator, config=config, chunk_size=chunk_size, n_workers=workers)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        rows = read_relaxed(out)
    return {"n": len(frame), "seconds": seconds, "cpu": cpu, "per_min": 60 * len(frame) / seconds,
            "converged": float(rows["converged"].mean()), "steps": float(rows["steps"].median())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agree-perov", type=int, default=200)
    parser.add_argument("--agree-carbon", type=int, default=50)
    parser.add_argument("--perov", type=int, default=1000, help="perov_5 cells for throughput (0: skip)")
    parser.add_argument("--carbon", type=int, default=1000, help="carbon_24 cells for throughput (0: skip)")
    parser.add_argument("--one-by-one-limit", type=int, default=None,
                        help="time the one-by-one path on this many of the throughput cells only (rate extrapolated)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes per throughput run")
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--optimizer", choices=["FIRE", "BFGS"], default="FIRE")
    parser.add_argument("--calculator", default="chgnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads while relaxing (CalculatorConfig)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    config = RelaxConfig(fmax=0.05, max_steps=500, optimizer=args.optimizer, time_limit_s=300)
    calculator = CalculatorConfig(args.calculator, device=args.device, cpu_threads=args.cpu_threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}; {config}\n")

    if args.agree_perov or args.agree_carbon:
        print("#### Agreement (same crystals, batched engine vs one-by-one ASE path, one process, 1 torch thread)\n")
        print("| data | crystals | same verdict | both converged | within 2 meV/atom | median / max abs dE (meV/atom) | "
              "batched wall s / CPU s (steps) | one-by-one wall s / CPU s (steps) | speed-up wall / CPU |")
        print("|---|---|---|---|---|---|---|---|---|")
    built = build_calculator(calculator)
    tables = []
    for data, n in (("perov_5", args.agree_perov), ("carbon_24", args.agree_carbon)):
        if n:
            r, table = agreement(perturbed_sample(data, n, args.seed), built, config)
            tables.append(table)
            print(f"| {data} | {r['n']} | {r['same_verdict']} | {r['both_converged']} | {r['within']} | "
                  f"{r['median_de']:.3f} / {r['max_de']:.3f} | {r['batched_s']:.1f} / {r['batched_cpu']:.1f} "
                  f"({r['steps_batched']}) | {r['ase_s']:.1f} / {r['ase_cpu']:.1f} ({r['steps_ase']}) | "
                  f"{r['ase_s'] / r['batched_s']:.1f}x / {r['ase_cpu'] / r['batched_cpu']:.1f}x |", flush=True)
    if tables:
        table = pd.concat(tables, ignore_index=True)
        off = table[(table["converged_batched"] != table["converged_ase"]) | (table["abs_de_mev"] > TOLERANCE * 1000)]
        print(f"\nDisagreements: {len(off)}" + ("" if off.empty else " (first 10)"))
        for row in off.head(10).itertuples():
            print(f"- {row.id} {row.formula}: batched {row.epa_batched:.4f} eV/atom in {row.steps_batched} steps "
                  f"({'converged' if row.converged_batched else row.error_batched[:60]}), one-by-one "
                  f"{row.epa_ase:.4f} in {row.steps_ase} ({'converged' if row.converged_ase else row.error_ase[:60]})")

    if args.perov or args.carbon:
        print("\n#### Throughput (dft.batch.relax_table: chunks of "
              f"{args.chunk_size}, part files; {args.cpu_threads} torch thread(s) per worker process)\n")
        print("| data | path | workers | structures | wall s | CPU s | structures/min | converged | median steps |")
        print("|---|---|---|---|---|---|---|---|---|")
    rates: dict[tuple, dict] = {}
    for data, n in (("perov_5", args.perov), ("carbon_24", args.carbon)):
        if not n:
            continue
        frame = perturbed_sample(data, n, args.seed + 1)
        for workers in args.workers:
            for engine in ("batched", "ase"):
                cells = frame if engine == "batched" or args.one_by_one_limit is None \
                    else frame.head(args.one_by_one_limit)
                r = throughput(cells, calculator, config.model_copy(update={"engine": engine}), workers,
                               args.chunk_size)
                rates[data, workers, engine] = r
                note = "" if len(cells) == len(frame) else f" (rate from {len(cells)}; {n} extrapolated: " \
                    f"{n / r['per_min']:.1f} min)"
                print(f"| {data} | {'batched' if engine == 'batched' else 'one-by-one (ASE)'} | {workers} | {r['n']} | "
                      f"{r['seconds']:.1f}{note} | {r['cpu']:.1f} | {r['per_min']:.1f} | {r['converged']:.0%} | "
                      f"{r['steps']:.0f} |", flush=True)
    print()
    for (data, workers, engine), r in rates.items():
        if engine == "batched" and (data, workers, "ase") in rates:
            alone = rates[data, workers, "ase"]
            print(f"- {data}, {workers} worker(s): batched {r['per_min'] / alone['per_min']:.1f}x the one-by-one rate "
                  f"(CPU per structure {alone['cpu'] / alone['n'] / (r['cpu'] / r['n']):.1f}x less); "
                  f"{r['n']:,} cells in {r['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
