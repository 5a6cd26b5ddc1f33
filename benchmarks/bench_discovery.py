"""Discovery benchmark: conditional UniMat vs random structure search, on perov_5 or carbon_24 targets.

Runs the real `discovery_benchmark` flow (a trained or shipped checkpoint, CHGNet with its shipped weights,
the bundled test split as the known structures) and prints markdown tables: per method, how many
compositions reached the reference energy (within 10 meV/atom), the median relaxations needed, the match
rate to the known structures and the compute time; the lowest energy found after k relaxations; and the
UniMat paper's AIRSS metrics (convergence rate, lowest energy per composition, reduction rate).

--dataset perov_5 (default): reference = each target's known test-split structure relaxed the same way.
--dataset carbon_24: targets are carbon cells C6..C24 of the test split, the reference is the best known
carbon (diamond or graphite relaxed the same way, the lower), the model defaults to `pretrained:carbon_24`
sampled with DPM-Solver++ (10 steps), relaxations are batched CHGNet + FIRE.

The run folder is `<results-root>/<campaign>/discovery/` and resumes if killed. The CPU is shared:
run it under `flock /work/heavy.lock` when other benchmarks are running.

Usage: python benchmarks/bench_discovery.py [--dataset carbon_24] [--checkpoint PATH] [--compositions 20] [--k 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from unimat_core.model.config import SAMPLERS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "benchmarks" / "runs" / "perov_5" / "quality" / "train" / "checkpoints" / "last.pt"
# per dataset: what the benchmark compares against and how (each overridable by its option)
DATASET_DEFAULTS = {
    "perov_5": {"checkpoint": str(DEFAULT_CHECKPOINT), "compositions": 20, "optimizer": "BFGS", "chunk_size": 10,
                "sampler": "ddim", "oversample": 1},
    "carbon_24": {"checkpoint": "pretrained:carbon_24", "compositions": 10, "optimizer": "FIRE", "chunk_size": 20,
                  "sampler": "dpm++2m", "oversample": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS), default="perov_5",
                        help="perov_5: known-structure reference; carbon_24: best known carbon (diamond/graphite)")
    parser.add_argument("--checkpoint", default=None, help="UniMat checkpoint (last.pt) or pretrained:<name> "
                        "(default: perov_5 the quality run's model, carbon_24 pretrained:carbon_24)")
    parser.add_argument("--compositions", type=int, default=None, help="target compositions to draw "
                        "(default: perov_5 20, carbon_24 10 = every cell size C6..C24)")
    parser.add_argument("--targets", default="", help="comma-separated target cell formulas instead of drawing "
                        "--compositions, e.g. C6,C10,C16,C24")
    parser.add_argument("--k", type=int, default=20, help="candidates (relaxations) per composition and method")
    parser.add_argument("--oversample", type=int, default=None, help="UniMat samples per candidate; the first K usable "
                        "ones are relaxed (default: perov_5 1, carbon_24 8: ~37 %% of its samples are usable)")
    parser.add_argument("--calculator", default="chgnet")
    parser.add_argument("--relax-steps", type=int, default=300)
    parser.add_argument("--optimizer", choices=["FIRE", "BFGS"], default=None,
                        help="default: perov_5 BFGS (about 60 steps per cell in bench_relax.py), carbon_24 FIRE")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per relaxation")
    parser.add_argument("--batch-atoms", type=int, default=256, help="most atoms in one batched CHGNet call")
    parser.add_argument("--chunk-size", type=int, default=None, help="relaxations per task (default: perov_5 10, "
                        "carbon_24 20: one batched relaxation per chunk, two chunks at a time)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                        help="default: perov_5 ddim, carbon_24 dpm++2m")
    parser.add_argument("--sampling-steps", type=int, default=None, help="default: dpm++2m 10, dpm++2m-sde 20, else 50")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-energies", action="store_true",
                        help="also score unconverged relaxations (default: converged only); rescoring a finished run "
                             "reuses every relaxation")
    parser.add_argument("--results-root", default=None, help="default: benchmarks/runs/<dataset>")
    parser.add_argument("--campaign", default=None, help="default: discovery-n<compositions>-k<k>")
    args = parser.parse_args()
    for name, value in DATASET_DEFAULTS[args.dataset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.sampling_steps is None:
        args.sampling_steps = {"dpm++2m": 10, "dpm++2m-sde": 20}.get(args.sampler, 50)
    args.results_root = args.results_root or str(REPO / "benchmarks" / "runs" / args.dataset)

    # its own Prefect database: a long run beside other users of ./.prefect hits "database is locked"
    from flows.server import prefect_environment

    prefect_environment(Path(args.results_root).resolve() / ".prefect")
    import pandas as pd

    from flows.discovery import DiscoveryParams, discovery_benchmark
    from flows.params import GenerateParams, RelaxParams, RunParams
    from dft.discovery_benchmark.report import curve_summary

    targets = tuple(t for t in args.targets.split(",") if t)
    size = f"t{len(targets)}" if targets else f"n{args.compositions}"
    run = RunParams(campaign=args.campaign or f"discovery-{size}-k{args.k}",
                    results_root=args.results_root)
    carbon = args.dataset == "carbon_24"
    discovery = DiscoveryParams(checkpoint=args.checkpoint, n_compositions=args.compositions, compositions=targets,
                                oversample=args.oversample,
                                relaxations_per_composition=args.k, converged_only=not args.all_energies,
                                known=args.dataset, reference="elemental" if carbon else "known",
                                unseen_only=not carbon)  # every carbon_24 cell size is also in the model's val split
    generate = GenerateParams(sampler=args.sampler, steps=args.sampling_steps, guidance=args.guidance, seed=args.seed)
    relax = RelaxParams(calculator=args.calculator, max_steps=args.relax_steps, optimizer=args.optimizer,
                        time_limit_s=args.time_limit, chunk_size=args.chunk_size, batch_atoms=args.batch_atoms)
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
    print(f"Checkpoint {args.checkpoint} (step {result['candidates']['unimat'].get('model_step')}; {args.sampler} "
          f"{args.sampling_steps} steps, guidance {args.guidance:g}); {args.calculator}, "
          f"{args.optimizer}, fmax {relax.fmax} eV/A, <= {args.relax_steps} steps, {args.time_limit:g} s each; "
          f"{result['n_scored']} compositions x {args.k} candidates per method (UniMat oversample {args.oversample}); scored: "
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
    paper = result["paper"]
    print(f"\nPaper metrics: convergence rate unimat {paper['convergence_rate']['unimat']:.2f} / random "
          f"{paper['convergence_rate']['random']:.2f}; reduction rate {paper['reduction_rate']:.2f} "
          f"({paper['reduced']} of {paper['compared']}, ties {paper['ties']}); mean lowest-energy difference "
          f"random - unimat {paper['mean_difference']:.3f} eV/atom (median {paper['median_difference']:.3f})")
    lowest = pd.read_parquet(folder / "lowest.parquet")
    print("\n" + lowest.to_markdown(index=False, floatfmt=".4g"))
    if carbon:
        print("\n" + (folder / "report.md").read_text().split("## Reference phases", 1)[1].split("\n\n", 2)[2])
    print(f"\nReport: {result['report']}\nPlot: {result['plot']}")


if __name__ == "__main__":
    main()
