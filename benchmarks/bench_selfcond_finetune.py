"""Does self-conditioning stop perov_5's cations landing on one site? A fine-tune against a control.

The shipped perov_5 model's invalid samples are mostly its two cations within 0.05 A of each other (which one takes
the A corner and which the B centre is a discrete choice). Self-conditioning (DenoiserConfig.self_condition) is the
published remedy for such choices, but the perov_5 training budget is spent, so instead of training from scratch this
fine-tunes the shipped model twice for the same minutes at its final learning rate:

- `control`: as shipped;
- `selfcond`: widened to read its previous clean estimate; the new input columns start at zero, so it starts as
  exactly the shipped model and learns to use the estimate during the fine-tune;

then samples composition-first crystals from each at the model's own settings (sampling.json) and counts the
structures with two atoms closer than 0.5 A (CDVAE's validity rule), by how often each atom's element occurs in
the cell (in ABX3: "1+1" is the two cations, "1+3" a cation and an anion).

    python benchmarks/bench_selfcond_finetune.py train --arm control --minutes 15 --threads 1
    python benchmarks/bench_selfcond_finetune.py train --arm selfcond --minutes 15 --threads 1
    python benchmarks/bench_selfcond_finetune.py score --arm control --samples 4000      # --arm shipped: no fine-tune
    (--lr 1e-3 on both: a fine-tune at ten times the shipped run's final learning rate)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_model import RUNS, _dataset  # noqa: E402

WORK = RUNS / "perov_5" / "selfcond-finetune"
SHIPPED = "pretrained:perov_5"
ARMS = ("control", "selfcond")
FINE_TUNE_LR = 1e-4  # where the shipped run's cosine schedule ended (its 10 % floor)


def arm_folder(arm: str, lr: float) -> Path:
    return WORK / f"{arm}-lr{lr:g}"


def widened_init(folder: Path) -> Path:
    """The shipped checkpoint as a self-conditioned model whose extra inputs weigh zero (same outputs)."""
    import torch

    from unimat_core.model.checkpoint import load_checkpoint, save_checkpoint
    from unimat_core.model.pretrained import checkpoint_file
    from unimat_core.model.sampling_defaults import inherit_sampling_defaults
    from unimat_core.model.self_conditioning import add_self_conditioning

    path = folder / "init" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, add_self_conditioning(load_checkpoint(SHIPPED, torch.device("cpu"))))
    inherit_sampling_defaults(checkpoint_file(SHIPPED), path.parent)
    return path


def train_arm(arm: str, minutes: float, threads: int, lr: float) -> None:
    from unimat_core.model.training import TrainConfig, train

    folder = arm_folder(arm, lr)
    init = SHIPPED if arm == "control" else str(widened_init(folder))
    config = TrainConfig(dataset=str(_dataset("perov_5", "cropped")), out_dir=str(folder / "train"), split="val",
                         init_from=init, learning_rate=lr, warmup_steps=1, lr_decay_steps=10_000_000,
                         max_steps=10_000_000, max_minutes=minutes, batch_size=64, composition_prior=False,
                         checkpoint_every=200, log_every=50, cpu_threads=threads, device="cpu")
    cpu0 = time.process_time()
    summary = train(config)
    print(json.dumps({"arm": arm, "lr": lr, "steps": summary.step, "cpu_s": round(time.process_time() - cpu0),
                      "last_loss": round(summary.last_loss, 4)}), flush=True)


def close_pair_roles(structure, cutoff: float = 0.5) -> list[str]:
    """For each pair of sites closer than `cutoff`, "m+n": how many atoms of each site's element the cell holds."""
    import numpy as np

    counts = structure.composition.get_el_amt_dict()
    distances = structure.distance_matrix
    i, j = np.nonzero(np.triu(distances < cutoff, k=1))
    roles = []
    for a, b in zip(i, j):
        pair = sorted(int(counts[structure[int(k)].specie.symbol]) for k in (a, b))
        roles.append(f"{pair[0]}+{pair[1]}")
    return roles


def score_arm(arm: str, samples: int, threads: int, lr: float) -> None:
    from unimat_core.metrics.validity import structure_validity
    from unimat_core.model.generation import GenerateConfig, generate, read_generated
    from unimat_core.structure_table import structure_from_json

    folder = WORK / arm if arm == "shipped" else arm_folder(arm, lr)
    checkpoint = SHIPPED if arm == "shipped" else str(folder / "train" / "checkpoints")
    out = folder / f"samples-{samples}"
    shutil.rmtree(out, ignore_errors=True)  # the arm may have trained on since: never score its old samples
    start = time.perf_counter()
    generate(GenerateConfig(checkpoint=checkpoint, out_dir=str(out), num_samples=samples, batch_size=100, seed=0,
                            device="cpu", cpu_threads=threads))
    frame = read_generated(out)
    invalid, roles = 0, Counter()
    for text in frame["structure"]:
        if not text:
            invalid += 1
            roles["not decoded"] += 1
            continue
        structure = structure_from_json(text)
        valid, _ = structure_validity(structure)
        if not valid:
            invalid += 1
            found = close_pair_roles(structure)
            roles.update(set(found) or {"other"})
    result = {"arm": arm, "lr": None if arm == "shipped" else lr, "samples": len(frame), "invalid": invalid,
              "struct_validity": round(1 - invalid / len(frame), 4), "by_pair": dict(roles.most_common()),
              "seconds": round(time.perf_counter() - start)}
    print(json.dumps(result), flush=True)
    with (WORK / "scores.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arm", choices=ARMS, required=True)
    t.add_argument("--minutes", type=float, default=15)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=FINE_TUNE_LR, help="fine-tune learning rate (constant)")
    s = sub.add_parser("score")
    s.add_argument("--arm", choices=(*ARMS, "shipped"), required=True)
    s.add_argument("--samples", type=int, default=2000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--lr", type=float, default=FINE_TUNE_LR, help="which fine-tune: its learning rate")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        train_arm(args.arm, args.minutes, args.threads, args.lr)
    else:
        score_arm(args.arm, args.samples, args.threads, args.lr)


if __name__ == "__main__":
    main()
