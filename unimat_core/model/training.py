"""Training loop: stream a tensorized dataset, log, checkpoint, resume after a kill.

Output folder (deterministic, so a rerun resumes):
    checkpoints/last.pt   complete checkpoint, replaced atomically every `checkpoint_every` steps
    checkpoints/sampling.json  the recommended sampling settings, inherited from the model a fine-tune starts from
    metrics.csv           one line per logged step (appended, so it survives a kill)
    config.json           the TrainConfig of the first run

Resume restores model, EMA, optimizer, step, best loss and the position in the epoch, so the
data order after a resume is the one an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from unimat_core import atomic
from unimat_core.augment import permute_slots, translate
from unimat_core.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from unimat_core.model.pretrained import CHECKPOINT_FILE, checkpoint_file
from unimat_core.model.sampling_defaults import SAMPLING_FILE, inherit_sampling_defaults
from unimat_core.model.composition_prior import PriorConfig, fit_prior
from unimat_core.model.config import DenoiserConfig, DiffusionConfig, TrainConfig
from unimat_core.model.device import autocast, pick_device
from unimat_core.model.diffusion import Condition, GaussianDiffusion
from unimat_core.model.ema import EMA
from unimat_core.representation import UniMatSpec, composition_grid
from unimat_core.tensor_store import TensorDataset

log = logging.getLogger(__name__)
METRIC_FIELDS = ("step", "epoch", "loss", "loss_atoms", "loss_empty", "loss_lattice", "samples_per_s", "elapsed_s", "lr")


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


def load_init(reference: str, spec, dataset: str, device: torch.device) -> dict:
    """The checkpoint a fine-tune starts from; it must have been trained on this dataset's tensor layout."""
    init = load_checkpoint(reference, device)
    theirs = UniMatSpec.from_dict(init["spec"])
    if init["spec"] != spec.as_dict():
        differences = [f"{name} {a} vs {b}" for name, a, b in (
            ("grid", theirs.grid.shape, spec.grid.shape), ("slots per element (L)", theirs.max_atoms_per_element,
                                                          spec.max_atoms_per_element),
            ("elements", theirs.grid.describe_elements(), spec.grid.describe_elements())) if a != b]
        raise ValueError(f"{reference} does not fit the data in {dataset}: "
                         f"{'; '.join(differences) or 'another lattice normalisation'} (model vs data). "
                         "Tensorize the data the way the model was trained (see its MODEL_CARD.md) or train from scratch")
    return init


def _fit_prior_state(data: TensorDataset, spec, config: TrainConfig) -> dict:
    """The composition prior fitted on the training split, as a checkpoint entry (tensors and plain numbers)."""
    coords, _lattice, _ids = data.load(config.split)
    counts = composition_grid(coords, spec).astype(np.int64)
    prior, stats = fit_prior(counts, spec, PriorConfig(seed=config.seed))
    log.info("composition prior: held-out NLL %.3f per token after %d epochs", stats["prior_nll"], stats["prior_epochs"])
    return {"state": prior.state_dict(), "config": prior.config.as_dict(), "stats": stats,
            "atom_counts": prior.atom_counts.tolist()}


def train(config: TrainConfig, on_log: Callable[[dict], None] | None = None) -> TrainSummary:
    """Train (or resume) until `max_steps` or `max_minutes`, whichever comes first."""
    if not config.dataset or not config.out_dir:
        raise ValueError("TrainConfig needs its dataset and out_dir folders")
    out = Path(config.out_dir)
    ckpt_path = out / "checkpoints" / CHECKPOINT_FILE
    device = pick_device(config.device, config.cpu_threads)
    torch.manual_seed(config.seed)
    data = TensorDataset(config.dataset)
    spec = data.spec
    n_rows = len(data.select(config.split))
    if n_rows == 0:
        raise ValueError(f"no training crystals in {config.dataset} (split={config.split!r})")
    batch_size = min(config.batch_size, n_rows)

    state = load_checkpoint(ckpt_path, device) if ckpt_path.exists() else None
    init = None
    if state is None and config.init_from:
        init = load_init(config.init_from, spec, config.dataset, device)
    base = state if state is not None and config.init_from else init  # fine-tuning: the shipped model's shape
    model_config = DenoiserConfig.from_dict(base["model_config"]) if base else config.denoiser_config()
    diffusion_config = DiffusionConfig.from_dict(base["diffusion_config"]) if base else config.diffusion
    model = build_model(model_config, spec).to(device)
    diffusion = GaussianDiffusion(diffusion_config, spec.null_value).to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, epoch, batch_in_epoch, best_loss, resumed_from = 0, 0, 0, float("inf"), 0

    if state is not None:
        if state["spec"] != spec.as_dict() or DenoiserConfig.from_dict(state["model_config"]) != model_config:
            raise ValueError(f"{ckpt_path} was trained with another dataset layout or model config; "
                             "use a new out_dir or delete the checkpoint")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        best_loss, resumed_from = float(state["best_loss"]), int(state["step"])
        prior_state = state.get("composition_prior")
        ema_offset = int(state.get("ema_offset", 0))
        log.info("resuming from step %d (epoch %d, batch %d)", step, epoch, batch_in_epoch)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "config.json", json.dumps(config.resolved(), indent=1))
        ema_offset = 0
        if init is not None:  # fine-tune: start from the shipped weights (EMA too), a fresh optimizer and step 0
            model.load_state_dict(init["model"])
            ema.load_state_dict(init["ema"])
            # the EMA goes on averaging at full decay instead of warming up again: the steps behind the init
            # include those behind its own init (a round's fine-tune of the previous round's fine-tune)
            ema_offset = int(init["step"]) + int(init.get("ema_offset", 0))
            log.info("fine-tuning from %s (trained %d steps)", config.init_from, int(init["step"]))
            if inherit_sampling_defaults(checkpoint_file(config.init_from), ckpt_path.parent):
                log.info("sampling defaults inherited from %s (%s)", config.init_from, SAMPLING_FILE)
        prior_state = _fit_prior_state(data, spec, config) if config.composition_prior else None
        if prior_state is None and init is not None:
            # a fine-tune that fits no prior of its own (a campaign round's) keeps its parent's, so unconditional
            # sampling from it still draws compositions first instead of falling back to joint sampling
            prior_state = init.get("composition_prior")

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best_loss": best_loss, "ema_offset": ema_offset,
            "spec": spec.as_dict(), "model_config": model_config.as_dict(),
            "diffusion_config": diffusion_config.as_dict(), "train_config": config.resolved(),
            **({"composition_prior": prior_state} if prior_state else {}),
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
                ema.update(model, step + ema_offset)
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
                keep = bool(config.keep_every) and step % config.keep_every == 0
                if keep or step % config.checkpoint_every == 0:  # written once when both fall on this step
                    checkpoint()
                if keep:
                    shutil.copy(ckpt_path, ckpt_path.with_name(f"step-{step:07d}.pt"))
            else:
                epoch += 1
                batch_in_epoch = 0
                continue
            break
    checkpoint()
    return TrainSummary(str(out), str(ckpt_path), step, resumed_from, last_loss, best_loss, samples_per_s,
                        time.perf_counter() - start, stopped_by)
