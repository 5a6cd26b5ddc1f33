"""Learning curve of the UniMat model: quality against crystals seen and CPU-seconds, read off snapshots of one run.

    python benchmarks/bench_learning_curve.py train --dataset perov_5 --variant periodic --minutes 60 --every 15
        trains (or resumes) the variant on the bundled val split in segments of `--every` minutes; after each
        segment the checkpoint is copied to snapshots/step-NNNNNNN.pt with the CPU-seconds spent so far.
    python benchmarks/bench_learning_curve.py evaluate --dataset perov_5 --variant periodic
        scores every snapshot not yet scored: CSP match rate / RMSE (k = 1) on a seeded set of test crystals,
        and unconditional samples (composition-first when the checkpoint has a prior) for validity and
        coverage against a seeded subset of the test split. One row per snapshot in curve.csv.
    python benchmarks/bench_learning_curve.py evaluate --dataset perov_5 --variant pretrained \
            --train-dir runs/pretrain-perov_5/train
        the same for the snapshots a `unimat train --keep-every N` run kept (tools/pretrain.sh).
    python benchmarks/bench_learning_curve.py report --dataset perov_5
        prints every variant's curve as a markdown table and writes learning_curve.png beside RESULTS.md.

Work folder: benchmarks/runs/<dataset>/curve-<variant>/. The variants (ablations) are named in VARIANTS.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import RUNS, _dataset  # noqa: E402
from unimat_core.model.config import SAMPLERS  # noqa: E402

ROOT = Path(__file__).resolve().parent
CURVE_FIELDS = ("variant", "step", "crystals_seen", "cpu_s", "csp_match", "csp_rmse", "struct_validity",
                "comp_validity", "cov_recall", "cov_precision", "emd_density", "n_samples", "n_csp", "eval_s")

# name -> (TrainConfig overrides, DiffusionConfig overrides). "base" is the landed default.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "periodic": ({}, {"periodic_loss": True}),
    "periodic-notranslate": ({"augment_translate": False}, {"periodic_loss": True}),
    "notranslate": ({"augment_translate": False}, {}),
    "periodic-v": ({}, {"periodic_loss": True, "prediction": "v"}),
    "periodic-small": ({"preset": "small"}, {"periodic_loss": True}),
    "periodic-lr3e-4": ({"learning_rate": 3e-4}, {"periodic_loss": True}),
    "periodic-b128": ({"batch_size": 128}, {"periodic_loss": True}),
    # geometry of interchangeable atoms (carbon_24): slot-permutation equivariance, periodic coordinate features
    "noslot": ({"model": {"slot_embedding": False}}, {}),
    "fourier8": ({"model": {"coord_fourier": 8}}, {}),
    "fourier8-noslot": ({"model": {"coord_fourier": 8, "slot_embedding": False}}, {}),
    # the denoiser reads its previous clean estimate (DenoiserConfig.self_condition, Analog Bits)
    "selfcond": ({"model": {"self_condition": True}}, {}),
    # the data in canonical cells (carbon_24's CIFs store arbitrary, often skewed cells; CDVAE's loader reduces them)
    "niggli": ({}, {}),
    "niggli-noslot": ({"model": {"slot_embedding": False}}, {}),
    "niggli-selfcond": ({"model": {"self_condition": True}}, {}),
    "niggli-medium": ({"model": {"width": 96, "blocks_per_level": 3, "time_dim": 128}}, {}),
    # slot attention biased by the periodic separation of each pair of slots (DenoiserConfig.pair_bias)
    "niggli-pair4": ({"model": {"pair_bias": 4, "slot_embedding": False}}, {}),
    # ... and by a Gaussian basis of each pair's minimum-image distance in Angstrom (DenoiserConfig.pair_distances)
    "niggli-dist16": ({"model": {"pair_bias": 4, "pair_distances": 16, "slot_embedding": False}}, {}),
    # ... and an EGNN-like coordinate output along the pairs' separations (DenoiserConfig.pair_displacement)
    "niggli-egnn": ({"model": {"pair_bias": 4, "pair_distances": 16, "pair_displacement": True,
                               "slot_embedding": False}}, {}),
    # ... trained on timesteps drawn denser at low noise (DiffusionConfig.train_timesteps)
    "niggli-egnn-lowt": ({"model": {"pair_bias": 4, "pair_distances": 16, "pair_displacement": True,
                                    "slot_embedding": False}}, {"train_timesteps": "quadratic"}),
    # ... and each crystal shifted by a random periodic translation (carbon has no canonical origin)
    "niggli-egnn-lowt-translate": ({"augment_translate": True,
                                    "model": {"pair_bias": 4, "pair_distances": 16, "pair_displacement": True,
                                              "slot_embedding": False}}, {"train_timesteps": "quadratic"}),
    # ... and message passing between the slots in every block (DenoiserConfig.pair_messages, CSPNet-like)
    "niggli-mp": ({"model": {"pair_bias": 4, "pair_distances": 16, "pair_displacement": True, "pair_messages": True,
                             "slot_embedding": False}}, {}),
}
NIGGLI = {name for name in VARIANTS if name.startswith("niggli")}  # variants trained on Niggli-reduced cells


def work(dataset: str, variant: str) -> Path:
    return RUNS / dataset / f"curve-{variant}"


def train_config(dataset: str, variant: str, threads: int):
    from unimat_core.model.config import DiffusionConfig
    from unimat_core.model.training import TrainConfig

    from unimat_core.model.config import preset

    train_over, diffusion_over = VARIANTS[variant]
    if "model" in train_over:  # denoiser fields on top of the preset
        train_over = {**train_over, "model": preset(train_over.get("preset", "tiny"), **train_over["model"])}
    base = dict(dataset=str(_dataset(dataset, "cropped", niggli=variant in NIGGLI)), out_dir=str(work(dataset, variant) / "train"), split="val",
                max_steps=10_000_000, lr_decay_steps=200_000, checkpoint_every=200, log_every=50, cpu_threads=threads,
                device="cpu", diffusion=DiffusionConfig(**diffusion_over))
    return TrainConfig(**{**base, **train_over})


def train_segments(dataset: str, variant: str, minutes: float, every: float, threads: int) -> None:
    from unimat_core.model.training import train

    folder = work(dataset, variant)
    snapshots = folder / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    log = snapshots / "snapshots.csv"
    spent = 0.0
    if log.exists():
        rows = list(csv.DictReader(log.open()))
        spent = float(rows[-1]["cpu_s"]) if rows else 0.0
    config = train_config(dataset, variant, threads)
    done = 0.0
    while done < minutes - 1e-6:
        segment = min(every, minutes - done)
        config.max_minutes = segment
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = train(config)
        spent += time.process_time() - cpu0
        done += (time.perf_counter() - wall0) / 60
        name = f"step-{summary.step:07d}.pt"
        shutil.copy(summary.checkpoint, snapshots / name)
        new = not log.exists()
        with log.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["snapshot", "step", "crystals_seen", "cpu_s"])
            writer.writerow([name, summary.step, summary.step * config.batch_size, round(spent, 1)])
        print(f"{variant}: step {summary.step}, {spent:.0f} CPU-s, loss {summary.last_loss:.4f}", flush=True)


def snapshots_of_run(dataset: str, variant: str) -> list[dict]:
    """Snapshots written by `train` above (snapshots/snapshots.csv)."""
    folder = work(dataset, variant) / "snapshots"
    return [{**row, "path": str(folder / row["snapshot"])} for row in csv.DictReader((folder / "snapshots.csv").open())]


def snapshots_of_train_dir(train_dir: Path) -> list[dict]:
    """`unimat train --keep-every N` snapshots (checkpoints/step-*.pt) with training seconds read off metrics.csv.

    metrics.csv's elapsed_s restarts with every resumed piece; the pieces are added up. One thread: wall = CPU.
    """
    import pandas as pd

    log = pd.read_csv(train_dir / "metrics.csv")
    offset, previous, seconds = 0.0, 0.0, {}
    for step, elapsed in zip(log["step"], log["elapsed_s"]):
        if elapsed < previous:
            offset += previous
        previous = elapsed
        seconds[int(step)] = offset + float(elapsed)
    batch = json.loads((train_dir / "config.json").read_text())["batch_size"]
    rows = []
    for path in sorted((train_dir / "checkpoints").glob("step-*.pt")):
        step = int(path.stem.split("-")[1])
        known = [s for s in seconds if s <= step]
        rows.append({"snapshot": path.name, "path": str(path), "step": str(step), "crystals_seen": str(step * batch),
                     "cpu_s": str(round(seconds[max(known)], 1)) if known else "nan"})
    return rows


def evaluate_snapshots(dataset: str, variant: str, csp_targets: int, samples: int, reference_limit: int,
                       steps: int, threads: int, workers: int, train_dir: Path | None = None,
                       only: set[str] | None = None, sampler: str = "dpm++2m", guidance: float = 1.0,
                       label: str = "") -> None:
    """Score every snapshot not yet in the curve file; `label` keeps a second curve of the same snapshots (e.g.
    another sampler) in curve-<label>.csv, its rows named variant/label."""
    from unimat_core.datasets import load_bundled
    from unimat_core.metrics import MetricsConfig, evaluate_structures
    from unimat_core.metrics.csp import CSPConfig, evaluate_csp
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.device import pick_device
    from unimat_core.model.generation import GenerateConfig, generate, read_generated

    pick_device("cpu", threads)
    folder = work(dataset, variant)
    curve = folder / (f"curve-{label}.csv" if label else "curve.csv")
    done = {row["step"] for row in csv.DictReader(curve.open())} if curve.exists() else set()
    tables = load_bundled(dataset).structures
    reference = tables[tables["split"] == "test"].reset_index(drop=True)
    cache = str(RUNS / dataset / "metrics" / "cache")
    folder.mkdir(parents=True, exist_ok=True)
    for row in snapshots_of_train_dir(train_dir) if train_dir else snapshots_of_run(dataset, variant):
        if row["step"] in done or (only and row["step"] not in only):
            continue
        start = time.perf_counter()
        path = Path(row["path"])
        loaded = load_model(path, "cpu")
        _, csp = evaluate_csp(loaded, reference, CSPConfig(k=1, n_targets=csp_targets, seed=0, steps=steps,
                                                           n_workers=workers, sampler=sampler, guidance=guidance))
        # a labelled curve keeps its own samples: the same snapshot sampled another way must not overwrite them
        gen_dir = folder / (f"samples-{label}" if label else "samples") / row["snapshot"].removesuffix(".pt")
        shutil.rmtree(gen_dir, ignore_errors=True)
        generate(GenerateConfig(checkpoint=str(path), out_dir=str(gen_dir), num_samples=samples, batch_size=128,
                                sampler=sampler, steps=steps, guidance=guidance, device="cpu", cpu_threads=threads),
                 loaded=loaded)
        metrics = evaluate_structures(read_generated(gen_dir), reference, None, MetricsConfig(
            dataset=dataset, n_workers=workers, reference_limit=reference_limit, matching=False, cache_dir=cache)).summary
        out = {"variant": f"{variant}/{label}" if label else variant, "step": row["step"], "crystals_seen": row["crystals_seen"], "cpu_s": row["cpu_s"],
               "csp_match": round(csp["match_rate"], 4), "csp_rmse": round(csp["rmse"], 4),
               "struct_validity": round(metrics["struct_validity"], 4), "comp_validity": round(metrics["comp_validity"], 4),
               "cov_recall": round(metrics["cov_recall"], 4), "cov_precision": round(metrics["cov_precision"], 4),
               "emd_density": round(metrics["emd_density"], 4), "n_samples": samples, "n_csp": csp["n_targets"],
               "eval_s": round(time.perf_counter() - start)}
        new = not curve.exists()
        with curve.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(out)
        print(json.dumps(out), flush=True)


def report(dataset: str) -> None:
    import pandas as pd

    frames = [pd.read_csv(p) for p in sorted((RUNS / dataset).glob("curve-*/curve*.csv"))]
    if not frames:
        print(f"no curves under {RUNS / dataset}")
        return
    table = pd.concat(frames, ignore_index=True)
    print(table.to_markdown(index=False))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for variant, rows in table.groupby("variant"):
        minutes = rows["cpu_s"] / 60
        axes[0].plot(minutes, 100 * rows["csp_match"], marker="o", label=variant)
        axes[1].plot(minutes, 100 * rows["struct_validity"], marker="o", label=variant)
        axes[2].plot(minutes, 100 * rows["cov_recall"], marker="o", label=variant)
    for ax, title in zip(axes, ("CSP match rate, k=1 (%)", "structural validity (%)", "COV-R (%)")):
        ax.set_title(title)
        ax.set_xlabel("training CPU-minutes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{dataset} learning curves")
    fig.tight_layout()
    out = ROOT / f"learning_curve_{dataset}.png"
    fig.savefig(out, dpi=90)
    print(f"plot: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", default="perov_5")
    t.add_argument("--variant", default="periodic", choices=sorted(VARIANTS))
    t.add_argument("--minutes", type=float, default=30)
    t.add_argument("--every", type=float, default=15)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("evaluate")
    e.add_argument("--dataset", default="perov_5")
    e.add_argument("--variant", default="periodic", help="a name in VARIANTS, or any name with --train-dir")
    e.add_argument("--train-dir", type=Path, default=None,
                   help="score the step-*.pt snapshots of a `unimat train --keep-every` folder instead")
    e.add_argument("--only", default="", help="comma-separated steps to score (default: every snapshot)")
    e.add_argument("--csp-targets", type=int, default=100)
    e.add_argument("--samples", type=int, default=256)
    e.add_argument("--reference-limit", type=int, default=300)
    e.add_argument("--sampler", default="dpm++2m", choices=SAMPLERS, help=" | ".join(SAMPLERS) + " (CSP and the samples)")
    e.add_argument("--steps", type=int, default=50)
    e.add_argument("--guidance", type=float, default=1.0)
    e.add_argument("--label", default="", help="write a second curve of these snapshots (curve-LABEL.csv)")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--workers", type=int, default=1)
    r = sub.add_parser("report")
    r.add_argument("--dataset", default="perov_5")
    args = parser.parse_args()
    if args.command == "train":
        train_segments(args.dataset, args.variant, args.minutes, args.every, args.threads)
    elif args.command == "evaluate":
        evaluate_snapshots(args.dataset, args.variant, args.csp_targets, args.samples, args.reference_limit, args.steps,
                           args.threads, args.workers, args.train_dir, {s for s in args.only.split(",") if s} or None,
                           args.sampler, args.guidance, args.label)
    else:
        report(args.dataset)


if __name__ == "__main__":
    main()
