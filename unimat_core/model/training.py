"""Training loop: stream a tensorized dataset, log, checkpoint, resume after a kill.

Output folder (deterministic, so a rerun resumes):
    checkpoints/last.pt   complete checkpoint, replaced atomically every `checkpoint_every` steps
    metrics.csv           one line per logged step (appended, so it survives a kill)
    config.json           the TrainConfig of the first run

Resume restores model, EMA, optimizer, step, best loss and the position in the epoch, so the
data order after a resume is the one an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from unimat_core.augment import permute_slots, translate
from unimat_core.model.checkpoint import CHECKPOINT_NAME, build_model, load_checkpoint, save_checkpoint
from unimat_core.model.config import DenoiserConfig, DiffusionConfig, preset
from unimat_core.model.device import autocast, pick_device
from unimat_core.model.diffusion import Condition, GaussianDiffusion
from unimat_core.model.ema import EMA
from unimat_core.representation import composition_grid
from unimat_core.tensor_store import TensorDataset

log = logging.getLogger(__name__)
METRIC_FIELDS = ("step", "epoch", "loss", "loss_atoms", "loss_empty", "loss_lattice", "samples_per_s", "elapsed_s", "lr")


@dataclass
class TrainConfig:
    dataset: str
    out_dir: str
    preset: str = "tiny"
    model: DenoiserConfig | None = None
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    split: str | None = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # cosine decay horizon; None = max_steps (fix it to extend a run later)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_steps: int = 2000
    max_minutes: float | None = None
    checkpoint_every: int = 100
    log_every: int = 10
    augment: bool = True          # random slot permutation (atoms of one element are interchangeable)
    augment_translate: bool = True  # random periodic shift of the origin
    seed: int = 0
    device: str = "auto"
    cpu_threads: int = 0  # 0 = every core; lower it when the machine is shared

    def model_config(self) -> DenoiserConfig:
        return self.model or preset(self.preset)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["model"] = self.model_config().as_dict()
        data["diffusion"] = self.diffusion.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["model"] = DenoiserConfig.from_dict(data["model"]) if data.get("model") else None
        data["diffusion"] = DiffusionConfig.from_dict(data["diffusion"]) if data.get("diffusion") else DiffusionConfig()
        return cls(**data)


@dataclass
class TrainSummary:
    out_dir: str
    checkpoint: str
    step: int
    resumed_from: int
    last_loss: float
    best_loss: float
    samples_per_s: float
    elapsed_s: float
    stopped_by: str

    def as_dict(self) -> dict:
        return asdict(self)


def _lr(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% over max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    horizon = config.lr_decay_steps or config.max_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, horizon - config.warmup_steps))
    return float(config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress))))


def train(config: TrainConfig, on_log: Callable[[dict], None] | None = None) -> TrainSummary:
    """Train (or resume) until `max_steps` or `max_minutes`, whichever comes first."""
    out = Path(config.out_dir)
    ckpt_path = out / "checkpoints" / CHECKPOINT_NAME
    device = pick_device(config.device, config.cpu_threads)
    torch.manual_seed(config.seed)
    data = TensorDataset(config.dataset)
    spec = data.spec
    n_rows = len(data.select(config.split))
    if n_rows == 0:
        raise ValueError(f"no training crystals in {config.dataset} (split={config.split!r})")
    batch_size = min(config.batch_size, n_rows)

    model_config = config.model_config()
    model = build_model(model_config, spec).to(device)
    diffusion = GaussianDiffusion(config.diffusion, spec.null_value).to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, epoch, batch_in_epoch, best_loss, resumed_from = 0, 0, 0, float("inf"), 0

    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        if state["spec"] != spec.as_dict() or state["model_config"] != model_config.as_dict():
            raise ValueError(f"{ckpt_path} was trained with another dataset layout or model config; "
                             "use a new out_dir or delete the checkpoint")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        best_loss, resumed_from = float(state["best_loss"]), int(state["step"])
        log.info("resuming from step %d (epoch %d, batch %d)", step, epoch, batch_in_epoch)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.as_dict(), indent=1))

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best_loss": best_loss,
            "spec": spec.as_dict(), "model_config": model_config.as_dict(),
            "diffusion_config": config.diffusion.as_dict(), "train_config": config.as_dict(),
        })

    metrics_file = out / "metrics.csv"
    new_file = not metrics_file.exists()
    start = time.perf_counter()
    window_start, window_samples = start, 0
    last_loss, stopped_by, samples_per_s = float("nan"), "max_steps", 0.0
    generator = torch.Generator(device="cpu")
    model.train()
    with metrics_file.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        if new_file:
            writer.writeheader()
        while step < config.max_steps:
            batches = data.iter_batches(batch_size, split=config.split, shuffle=True, seed=config.seed * 100_003 + epoch,
                                        drop_last=True)
            for index, (coords_np, lattice_np, _ids) in enumerate(batches):
                if index < batch_in_epoch:
                    continue  # resumed mid-epoch: skip what was already seen
                if step >= config.max_steps:
                    break
                if config.max_minutes is not None and time.perf_counter() - start > 60 * config.max_minutes:
                    stopped_by = "max_minutes"
                    break
                generator.manual_seed(config.seed * 1_000_003 + step)
                rng = np.random.default_rng([config.seed, epoch, index])  # per batch: identical data after a resume
                if config.augment:
                    coords_np = permute_slots(coords_np, spec, rng)
                if config.augment and config.augment_translate:
                    coords_np = translate(coords_np, spec, rng)
                coords = torch.from_numpy(np.ascontiguousarray(coords_np)).to(device)
                lattice = torch.from_numpy(np.ascontiguousarray(lattice_np)).to(device)
                grid = torch.from_numpy(composition_grid(coords_np, spec) / spec.max_atoms_per_element).to(device)
                flag = (torch.rand(coords.shape[0], generator=generator) >= config.diffusion.cond_drop_prob).float().to(device)

                for group in optimizer.param_groups:
                    group["lr"] = _lr(config, step)
                with autocast(device):
                    loss, parts = diffusion.loss(model, coords, lattice, Condition(grid, flag),
                                                 generator=generator if device.type == "cpu" else None)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                ema.update(model, step)
                step += 1
                batch_in_epoch = index + 1
                last_loss = parts["loss"]
                window_samples += coords.shape[0]

                if step % config.log_every == 0 or step == config.max_steps:
                    now = time.perf_counter()
                    samples_per_s = window_samples / max(now - window_start, 1e-9)
                    window_start, window_samples = now, 0
                    row = {"step": step, "epoch": epoch, **parts, "samples_per_s": round(samples_per_s, 2),
                           "elapsed_s": round(now - start, 2), "lr": _lr(config, step - 1)}
                    writer.writerow(row)
                    fh.flush()
                    best_loss = min(best_loss, parts["loss"])
                    if on_log is not None:
                        on_log(row)
                if step % config.checkpoint_every == 0:
                    checkpoint()
            else:
                epoch += 1
                batch_in_epoch = 0
                continue
            break
    checkpoint()
    return TrainSummary(str(out), str(ckpt_path), step, resumed_from, last_loss, best_loss, samples_per_s,
                        time.perf_counter() - start, stopped_by)
