"""UniMat model benchmarks: throughput per preset, and the 30-minute quality run.

    python benchmarks/bench_model.py throughput [--dataset perov_5]
        training samples/s, generation structures/s (DDIM and DDPM) and peak memory per preset;
        each measurement runs in its own process so its peak RSS is its own.
    python benchmarks/bench_model.py quality --dataset perov_5 --minutes 30 --num-samples 10000
        trains `tiny` on the bundled val split for the wall-clock budget, generates, and evaluates
        against the test split with unimat_core.metrics (novelty vs the val split). Resumable: re-running
        continues training / generation where it stopped. Work folder: benchmarks/runs/<dataset>/.

Prints markdown tables; record them in benchmarks/RESULTS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "runs"


def _dataset(name: str, grid: str = "full", niggli: bool = False) -> Path:
    """Bundled val+test tensorized once (cached on the input hash); `grid="cropped"` keeps only its elements'
    rows/columns; `niggli` encodes Niggli-reduced cells."""
    from unimat_core.datasets import load_bundled
    from unimat_core.tensor_store import tensorize_frame

    path = RUNS / name / f"tensors{_suffix(grid)}{'-niggli' if niggli else ''}"
    tensorize_frame(load_bundled(name).structures, path, crop_grid=grid == "cropped", niggli=niggli)
    return path


def _suffix(grid: str) -> str:
    return "" if grid == "full" else f"-{grid}"


def _tagged(name: str, tag: str) -> str:
    """`name-tag`, or `name` when there is no tag."""
    return f"{name}-{tag}" if tag else name


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_train(dataset: str, preset: str, batch_size: int, steps: int, grid: str = "full") -> dict:
    from unimat_core.model.training import TrainConfig, train

    out = RUNS / dataset / f"throughput-train-{preset}{_suffix(grid)}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    warm = TrainConfig(dataset=str(_dataset(dataset, grid)), out_dir=str(out), preset=preset, split="val", batch_size=batch_size,
                       max_steps=2, log_every=1, checkpoint_every=10_000)
    train(warm)
    start = time.perf_counter()
    summary = train(TrainConfig.from_dict({**warm.as_dict(), "max_steps": 2 + steps}))
    elapsed = time.perf_counter() - start
    return {"samples_per_s": steps * batch_size / elapsed, "peak_mb": _peak_mb(), "checkpoint": summary.checkpoint}


def measure_generate(dataset: str, preset: str, sampler: str, steps: int, batch_size: int, num: int,
                     grid: str = "full") -> dict:
    import torch

    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.config import GenerateConfig
    from unimat_core.model.generation import sample_batch

    ckpt = RUNS / dataset / f"throughput-train-{preset}{_suffix(grid)}" / "checkpoints"
    loaded = load_model(ckpt, "cpu")
    generator = torch.Generator().manual_seed(0)
    guidance = loaded.recommended(GenerateConfig()).guidance
    sample_batch(loaded, [None] * 2, sampler=sampler, steps=2, guidance=guidance, generator=generator)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < num:
        n = min(batch_size, num - done)
        sample_batch(loaded, [None] * n, sampler=sampler, steps=steps, guidance=guidance, generator=generator)
        done += n
    elapsed = time.perf_counter() - start
    return {"structures_per_s": num / elapsed, "peak_mb": _peak_mb()}


def _child(kind: str, **kwargs) -> dict:
    args = [sys.executable, __file__, "_child", kind, json.dumps(kwargs)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


PRESET_PLAN = {  # (train batch, train steps, generation batch, DDIM samples, DDPM samples); tiny+small ~4 min on 2 cores,
    # paper's one DDPM-1000 sample alone > 8 min
    "tiny": (64, 10, 64, 64, 2),
    "small": (32, 5, 16, 16, 1),
    "paper": (8, 2, 4, 4, 1),
}


def throughput(dataset: str, presets: list[str], ddim_steps: int, grid: str = "full") -> None:
    rows = []
    for preset in presets:
        tb, ts, gb, n_ddim, n_ddpm = PRESET_PLAN[preset]
        tr = _child("train", dataset=dataset, preset=preset, batch_size=tb, steps=ts, grid=grid)
        ddim = _child("generate", dataset=dataset, preset=preset, sampler="ddim", steps=ddim_steps, batch_size=gb,
                      num=n_ddim, grid=grid)
        ddpm = _child("generate", dataset=dataset, preset=preset, sampler="ddpm", steps=1000, batch_size=gb, num=n_ddpm,
                      grid=grid)
        rows.append({
            "preset": preset, "train batch": tb, "train samples/s": round(tr["samples_per_s"], 1),
            "train peak RSS (MB)": round(tr["peak_mb"]),
            f"DDIM-{ddim_steps} struct/s": round(ddim["structures_per_s"], 2),
            "DDPM-1000 struct/s": round(ddpm["structures_per_s"], 3),
            "generate peak RSS (MB)": round(max(ddim["peak_mb"], ddpm["peak_mb"])),
            f"10k DDIM-{ddim_steps} (min)": round(10_000 / ddim["structures_per_s"] / 60, 1),
        })
    _print_machine()
    import pandas as pd

    print(f"dataset: {dataset}, grid: {grid}")
    print(pd.DataFrame(rows).to_markdown(index=False))


@dataclass(frozen=True)
class QualityOptions:
    """One quality run: what is trained on which tensor, then how many samples are drawn and scored."""

    dataset: str = "perov_5"
    minutes: float = 30
    num_samples: int = 10_000
    ddim_steps: int = 50
    batch_size: int = 64
    lr_decay_steps: int = 4000
    translate: bool = False
    slot_permutation: bool = True  # shuffle each element's atoms over its L slots (TrainConfig.augment)
    threads: int = 0
    metric_workers: int = 2
    coverage_on: str = "all"
    skip_train: bool = False
    reference_limit: int | None = None
    grid: str = "full"
    prediction: str = "eps"
    slot_loss: str = "balanced"
    atom_loss_weight: float = 1.0
    gen_batch_size: int = 500
    matching: bool = True
    tag: str = ""  # names a variant's work folder, e.g. quality-cropped-aw3
    sample_tag: str = ""  # names a sampling variant's generated/metrics folders beside the same model, e.g. ddim10

    @property
    def work(self) -> Path:
        return RUNS / self.dataset / _tagged(f"quality{_suffix(self.grid)}", self.tag)

    def folder(self, name: str) -> Path:
        """`generated` or `metrics` of this sampling variant."""
        return self.work / _tagged(name, self.sample_tag)


def quality(options: QualityOptions) -> None:
    from unimat_core.model.config import DiffusionConfig
    from unimat_core.model.generation import GenerateConfig, generate, read_generated
    from unimat_core.model.training import TrainConfig, train

    o, work = options, options.work
    config = TrainConfig(dataset=str(_dataset(o.dataset, o.grid)), out_dir=str(work / "train"), preset="tiny", split="val",
                         batch_size=o.batch_size, max_steps=1_000_000, max_minutes=o.minutes,
                         lr_decay_steps=o.lr_decay_steps, checkpoint_every=200, log_every=50,
                         augment=o.slot_permutation, augment_translate=o.translate, cpu_threads=o.threads,
                         diffusion=DiffusionConfig(prediction=o.prediction, slot_loss=o.slot_loss,
                                                   atom_loss_weight=o.atom_loss_weight))
    print(f"quality run: {asdict(o)}", flush=True)
    start = time.perf_counter()
    if o.skip_train:  # reuse the finished run's checkpoint as it is (a resumed train() would take another step)
        checkpoint = str(work / "train" / "checkpoints" / "last.pt")
    else:
        summary = train(config)
        checkpoint = summary.checkpoint
        print(f"train: {summary.as_dict()} ({time.perf_counter() - start:.0f} s this call)", flush=True)
    start = time.perf_counter()
    gen = generate(GenerateConfig(checkpoint=checkpoint, out_dir=str(o.folder("generated")), num_samples=o.num_samples,
                                  batch_size=o.gen_batch_size, steps=o.ddim_steps, sampler="ddim", device="cpu",
                                  cpu_threads=o.threads))
    print(f"generate: {gen.n_generated} structures, {gen.n_valid} decoded, {time.perf_counter() - start:.0f} s this call",
          flush=True)
    generated = read_generated(o.folder("generated"))
    print(f"decoded valid: {generated['valid'].mean():.4f}")
    evaluate_quality(o.dataset, generated, o.folder("metrics"), o.metric_workers, o.coverage_on, o.reference_limit, o.matching)


def evaluate_quality(dataset: str, generated, metrics_dir: Path, n_workers: int = 2, coverage_on: str = "all",
                     reference_limit: int | None = None, matching: bool = True) -> None:
    """CDVAE metrics + uniqueness/novelty of the samples: reference = test split, novelty vs the val split
    the model was trained on. Reference fingerprints are cached under benchmarks/runs/<dataset>/metrics/cache."""
    from unimat_core.datasets import load_bundled
    from unimat_core.metrics import MetricsConfig, evaluate_structures, write_metrics

    tables = load_bundled(dataset).structures
    reference = tables[tables["split"] == "test"].reset_index(drop=True)
    training = tables[tables["split"] == "val"].reset_index(drop=True)
    config = MetricsConfig(dataset=dataset, n_workers=n_workers, coverage_on=coverage_on,
                           reference_limit=reference_limit, matching=matching, cache_dir=str(RUNS / dataset / "metrics" / "cache"))
    start = time.perf_counter()
    result = evaluate_structures(generated, reference, training, config)
    paths = write_metrics(result, metrics_dir)
    print(f"evaluate: {time.perf_counter() - start:.0f} s -> {paths['summary']}")
    print(result.markdown())


def _print_machine() -> None:
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, kwargs = sys.argv[2], json.loads(sys.argv[3])
        result = (measure_train if kind == "train" else measure_generate)(**kwargs)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--dataset", default="perov_5")
    t.add_argument("--presets", default="tiny,small,paper")
    t.add_argument("--ddim-steps", type=int, default=50)
    t.add_argument("--grid", choices=["full", "cropped"], default="full",
                   help="full periodic table or only the dataset's rows/columns (--crop-grid)")
    q = sub.add_parser("quality")
    q.add_argument("--dataset", default="perov_5")
    q.add_argument("--minutes", type=float, default=30)
    q.add_argument("--num-samples", type=int, default=10_000)
    q.add_argument("--ddim-steps", type=int, default=50)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--lr-decay-steps", type=int, default=4000)
    q.add_argument("--translate", action="store_true", help="also augment with random origin shifts")
    q.add_argument("--no-slot-permutation", dest="slot_permutation", action="store_false",
                   help="keep each element's atoms in the first slots (no random slot shuffle)")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    q.add_argument("--metric-workers", type=int, default=2)
    q.add_argument("--coverage-on", choices=["all", "subset"], default="all",
                   help="COV over all valid samples (CDVAE) or the seeded 1,000 subset (faster)")
    q.add_argument("--skip-train", action="store_true", help="generate + evaluate with the existing checkpoint")
    q.add_argument("--reference-limit", type=int, default=None, help="seeded subset of the test split (default: all)")
    q.add_argument("--grid", choices=["full", "cropped"], default="full")
    q.add_argument("--prediction", choices=["eps", "v"], default="eps")
    q.add_argument("--slot-loss", choices=["balanced", "slots"], default="balanced",
                   help="balanced: atom and empty slots averaged separately; slots: one mean over all slots")
    q.add_argument("--atom-loss-weight", type=float, default=1.0, help="extra weight of atom slots")
    q.add_argument("--gen-batch-size", type=int, default=500)
    q.add_argument("--tag", default="", help="work folder suffix for a variant run")
    q.add_argument("--sample-tag", default="",
                   help="generated/metrics folder suffix for a sampling variant of the same model (e.g. ddim10)")
    q.add_argument("--no-matching", dest="matching", action="store_false",
                   help="skip uniqueness/novelty (carbon_24: one formula group, millions of StructureMatcher fits)")
    args = parser.parse_args()
    if args.mode == "throughput":
        throughput(args.dataset, args.presets.split(","), args.ddim_steps, args.grid)
    else:
        quality(QualityOptions(**{k: v for k, v in vars(args).items() if k != "mode"}))


if __name__ == "__main__":
    main()
