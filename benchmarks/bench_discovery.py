"""Discovery benchmark: conditional UniMat vs random structure search on perov_5 test compositions.

Runs the real `discovery_benchmark` flow (a trained checkpoint, CHGNet with its shipped weights, the
bundled perov_5 test split as the known structures) and prints a markdown table: per method, how many
compositions reached the known energy (within 10 meV/atom), the median relaxations needed, the match
rate to the known structure and the compute time; then the lowest energy found after k relaxations.
The run folder is `<results-root>/<campaign>/discovery/` and resumes if killed. The CPU is shared:
run it under `flock /tmp/unimat-cpu.lock` when other benchmarks are running.

Usage: python benchmarks/bench_discovery.py [--checkpoint PATH] [--compositions 20] [--k 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "benchmarks" / "runs" / "perov_5" / "quality" / "train" / "checkpoints" / "last.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="trained UniMat checkpoint (last.pt)")
    parser.add_argument("--compositions", type=int, default=20, help="perov_5 test compositions to draw")
    parser.add_argument("--k", type=int, default=20, help="candidates (relaxations) per composition and method")
    parser.add_argument("--calculator", default="chgnet")
    parser.add_argument("--relax-steps", type=int, default=300)
    parser.add_argument("--optimizer", choices=["FIRE", "BFGS"], default="BFGS",
                        help="BFGS: about 60 steps per perov_5 cell in bench_relax.py, fewer than FIRE")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per relaxation")
    parser.add_argument("--chunk-size", type=int, default=10, help="relaxations per task")
    parser.add_argument("--sampling-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-energies", action="store_true",
                        help="also score unconverged relaxations (default: converged only); rescoring a finished run "
                             "reuses every relaxation")
    parser.add_argument("--results-root", default=str(REPO / "benchmarks" / "runs" / "perov_5"))
    parser.add_argument("--campaign", default=None, help="default: discovery-n<compositions>-k<k>")
    args = parser.parse_args()

    # its own Prefect database: a long run beside other users of ./.prefect hits "database is locked"
    os.environ.setdefault("PREFECT_HOME", str(Path(args.results_root).resolve() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    import pandas as pd

    from flows.discovery import DiscoveryParams, discovery_benchmark
    from flows.params import GenerateParams, RelaxParams, RunParams
    from dft.discovery_benchmark.report import curve_summary

    run = RunParams(campaign=args.campaign or f"discovery-n{args.compositions}-k{args.k}",
                    results_root=args.results_root)
    discovery = DiscoveryParams(checkpoint=args.checkpoint, n_compositions=args.compositions,
                                relaxations_per_composition=args.k, converged_only=not args.all_energies)
    generate = GenerateParams(steps=args.sampling_steps, guidance=args.guidance, seed=args.seed)
    relax = RelaxParams(calculator=args.calculator, max_steps=args.relax_steps, optimizer=args.optimizer,
                        time_limit_s=args.time_limit, chunk_size=args.chunk_size)
    start = time.perf_counter()
    result = discovery_benchmark(run, discovery, relax, generate)
    wall = time.perf_counter() - start

    folder = Path(result["folder"])
    summary = pd.read_parquet(folder / "summary.parquet")
    curves = curve_summary(pd.read_parquet(folder / "curves.parquet"), discovery.tolerance)
    results = pd.read_parquet(folder / "results.parquet")
    import torch

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"Checkpoint {args.checkpoint} (step {result['candidates']['unimat'].get('model_step')}); {args.calculator}, "
          f"{args.optimizer}, fmax {relax.fmax} eV/A, <= {args.relax_steps} steps, {args.time_limit:g} s each; "
          f"{result['n_scored']} compositions x {args.k} candidates per method; scored: "
          f"{'every relaxation with an energy' if args.all_energies else 'converged relaxations only'}; wall time {wall / 60:.1f} min "
          f"({'resumed' if result['targets']['reused'] else 'fresh'} run)\n")
    print(summary.to_markdown(index=False, floatfmt=".3g"))
    head = result.get("head_to_head")
    if head:
        print(f"\nHead to head: UniMat fewer relaxations for {head['challenger_fewer']}, ties {head['ties']}, "
              f"random fewer for {head['baseline_fewer']}; median saving {head['median_saving']:.1f} "
              f"(IQR {head['iqr_saving'][0]:.1f} to {head['iqr_saving'][1]:.1f}) relaxations")
    usable = results.groupby("method").agg(proposed=("id", "size"), usable=("valid", "sum"),
                                           converged=("converged", "sum"))
    print("\n" + usable.reset_index().to_markdown(index=False))
    print("\n" + curves.to_markdown(index=False, floatfmt=".3g"))
    print(f"\nReport: {result['report']}\nPlot: {result['plot']}")


if __name__ == "__main__":
    main()
