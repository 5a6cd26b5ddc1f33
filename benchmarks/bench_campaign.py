"""Time the README's demo campaign (`make demo`) stage by stage in a fresh results root.

Runs the real campaign flow with the `demo` profile (flows/profiles.py; ephemeral Prefect on SQLite, tiny
model, CHGNet, offline reference hull) and prints a markdown table of seconds per stage, the
headline numbers of each stage, the load average and the machine.

    python benchmarks/bench_campaign.py [--results-root DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "CUDA" if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def headline(stage: str, result: dict) -> str:
    if stage == "score":
        if "skipped" in result:
            return result["skipped"]
        s, r = result["scores"], result["reference"]
        relaxed = "" if r["kind"] != "offline" else (
            f" ({r.get('n_prototypes_relaxed', 0)} prototype + {r.get('n_dataset_relaxed', 0)} dataset "
            f"relaxations, {r.get('n_systems_from_cache', 0)} systems from the cache)")
        return (f"reference {r['n_entries']} entries {r.get('sources', {})}{relaxed}; scored {s['n_scored']}/"
                f"{s['n_candidates']} ({s['n_not_converged']} not converged), stable {s['n_stable']}, "
                f"metastable {s['n_metastable']}")
    keys = {"fetch": ("n_structures",), "tensorize": ("n_encoded",), "train": ("step", "stopped_by", "last_loss"),
            "generate": ("n_generated", "n_valid"), "relax": ("n_relaxed", "n_converged", "n_failed"),
            "evaluate": ("validity", "cov_recall", "cov_precision", "uniqueness", "novelty")}[stage]
    return ", ".join(f"{k} {result[k]:.3g}" if isinstance(result.get(k), float) else f"{k} {result.get(k)}"
                     for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-root", default=None, help="fresh folder for the run (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of training and sampling (default: "
                        "the demo's, every core; 1 when another job holds a core: oversubscribed torch threads "
                        "run ~10x slower)")
    args = parser.parse_args()
    root = Path(args.results_root or tempfile.mkdtemp(prefix="bench-campaign-"))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} is not empty: the benchmark needs a fresh results root")
    # a fresh Prefect home like a first `make demo`: the database migrations are part of the measured time
    (root / ".prefect").mkdir(parents=True, exist_ok=True)
    from flows.server import prefect_environment

    prefect_environment(root / ".prefect")

    load_before = os.getloadavg()
    start = time.perf_counter()
    from flows.campaign import discovery_campaign
    from flows.params import CampaignParams, RunParams

    params = CampaignParams(run=RunParams(campaign="bench", results_root=str(root)))
    if args.threads is not None:
        params = params.model_copy(update={group: getattr(params, group).model_copy(update={"cpu_threads": args.threads})
                                           for group in ("train", "generate")})
    imported = time.perf_counter()
    result = discovery_campaign(params)
    total = time.perf_counter() - start
    load_after = os.getloadavg()

    print(f"Machine: {machine()}")
    print(f"Load average before {load_before[0]:.1f} / after {load_after[0]:.1f} (1 min), "
          f"{load_after[2]:.1f} (15 min) on {os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    gen = params.generate
    samples = (f"{len(gen.compositions) * gen.samples_per_composition} samples for {len(gen.compositions)} compositions"
               if gen.compositions else f"{gen.num_samples} unconditional samples")
    print(f"Demo parameters (profile {params.profile}, torch threads {params.train.cpu_threads or 'all'}): train "
          + (f"{params.train.max_minutes} min / " if params.train.max_minutes else "")
          + f"{params.train.max_steps} steps, batch "
          f"{params.train.batch_size}; {samples}; {params.relax.calculator} + {params.relax.optimizer} relax "
          f"{params.relax.max_steps} steps / {params.relax.time_limit_s:g} s, chunks of {params.relax.chunk_size}; "
          f"reference {params.score.reference} (prototypes + <= {params.score.reference_size} dataset structures); "
          f"evaluate vs "
          f"{params.evaluate.reference_limit or 'all'} reference structures, coverage on {params.evaluate.coverage_on}\n")
    print("| stage | seconds | result |\n|---|---|---|")
    print(f"| imports | {imported - start:.1f} | |")
    for stage, seconds in result["seconds"].items():
        print(f"| {stage} | {seconds:.1f} | {headline(stage, result[stage])} |")
    overhead = total - (imported - start) - sum(result["seconds"].values())
    print(f"| Prefect start-up + campaign overhead | {overhead:.1f} | |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | |")
    if "sun" in result:
        sun = result["sun"]
        print(f"\nS.U.N.: {sun['n_sun']} / {sun['n_candidates']} (stable {sun['n_stable']}, unique {sun['n_unique']}, "
              f"novel {sun['n_novel']}; {sun['n_not_converged']} not converged, never stable)")
    if not args.keep and args.results_root is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nRun folder: {root / 'bench'}")


if __name__ == "__main__":
    main()
