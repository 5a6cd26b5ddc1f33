"""Batched generation: sample, decode, and write each batch as a parquet part as soon as it is done.

Parts are named by batch index (`part-00000.parquet`, ...), and each batch's random seed is
derived from (seed, batch index), so a rerun skips finished parts and produces exactly the
parts a crash left out. Invalid decodes are kept as rows with `valid=False` and a `reason`
(their `structure` is null), so nothing is silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pymatgen.core import Composition

from unimat_core import atomic
from unimat_core.model.checkpoint import LoadedModel, load_model
from unimat_core.model.config import GenerateConfig, Sampler
from unimat_core.model.device import autocast, pick_device
from unimat_core.model.diffusion import Condition, Pinned
from unimat_core.model.lanes import map_in_lanes, sampling_lanes
from unimat_core.representation import UniMatSpec, decode
from unimat_core.structure_table import CORE_COLUMNS, describe, structure_from_json, structure_to_json

log = logging.getLogger(__name__)

GENERATED_EXTRA = ("valid", "reason", "target_formula", "batch")


class CompositionError(ValueError):
    """A requested composition the model cannot represent."""


@dataclass
class GenerateSummary:
    out_dir: str
    parts: list[str] = field(default_factory=list)
    n_generated: int = 0
    n_valid: int = 0
    n_skipped_parts: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def composition_counts(formula: str, spec: UniMatSpec) -> np.ndarray:
    """[H, W] integer atom counts of one cell of `formula`; clear errors for what cannot be encoded."""
    try:
        composition = Composition(formula)
    except Exception as exc:
        raise CompositionError(f"{formula!r} is not a chemical formula: {exc}") from exc
    grid = np.zeros(spec.grid.shape, dtype=np.int64)
    for element, amount in composition.items():
        z = getattr(element, "Z", 0)
        if not spec.grid.contains(z):
            raise CompositionError(f"{formula!r}: element {element} is not on the periodic-table grid "
                                   f"({spec.grid.describe_elements()})")
        if abs(amount - round(amount)) > 1e-6 or amount < 1:
            raise CompositionError(f"{formula!r}: {element} count {amount} is not a positive integer (give the full cell)")
        if round(amount) > spec.max_atoms_per_element:
            raise CompositionError(f"{formula!r}: {int(round(amount))} {element} atoms exceed the model's "
                                   f"{spec.max_atoms_per_element} slots per element (L)")
        grid[spec.grid.z_to_row[z], spec.grid.z_to_col[z]] = int(round(amount))
    return grid


def _targets(config: GenerateConfig, spec: UniMatSpec) -> list[str | None]:
    """One entry per sample: the target formula, or None for unconditional samples."""
    if config.compositions:
        for formula in config.compositions:
            composition_counts(formula, spec)  # validate all before any work
        return [f for f in config.compositions for _ in range(config.samples_per_composition)]
    return [None] * config.num_samples


def _condition(targets: Sequence[str | None], spec: UniMatSpec, device: torch.device) -> tuple[Condition, Pinned | None]:
    counts = np.stack([composition_counts(t, spec) if t else np.zeros(spec.grid.shape, np.int64) for t in targets])
    flag = torch.tensor([1.0 if t else 0.0 for t in targets], device=device)
    grid = torch.from_numpy(counts / spec.max_atoms_per_element).float().to(device)
    if not any(targets):
        return Condition(grid, flag), None
    slots = torch.arange(spec.max_atoms_per_element, device=device).view(1, -1, 1, 1)
    atom_mask = slots < torch.from_numpy(counts).to(device)[:, None]
    rows = flag.bool()
    null_mask = ~atom_mask & rows.view(-1, 1, 1, 1)
    return Condition(grid, flag), Pinned(null_mask=null_mask, atom_mask=atom_mask, rows=rows, null_value=spec.null_value)


def sample_batch(loaded: LoadedModel, targets: Sequence[str | None], *, sampler: Sampler, steps: int, guidance: float,
                 noise_scale: float = 1.0, generator: torch.Generator | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw samples (coords [B, L, H, W, 3], lattice [B, 6]) for a list of targets; the sampling settings come from
    the caller's config (GenerateConfig, CSPConfig), which holds their defaults."""
    spec = loaded.spec
    device = loaded.device
    cond, pinned = _condition(targets, spec, device)
    eta = 1.0 if sampler == "ddpm" else 0.0
    solver = sampler if sampler.startswith("dpm++") else "ddim"
    with autocast(device):
        coords, lattice = loaded.diffusion.sample(loaded.model, (len(targets), *spec.shape), cond, steps=steps, eta=eta,
                                                  solver=solver, guidance=guidance, noise_scale=noise_scale,
                                                  pinned=pinned, generator=generator, progress=progress)
    return coords.float().cpu().numpy(), lattice.float().cpu().numpy()


def formula_of(counts: np.ndarray, spec: UniMatSpec) -> str:
    """A cell formula ("Sr1Ti1O3") from an [H, W] grid of atom counts, in table order."""
    from pymatgen.core import Element

    rows, cols = np.nonzero(counts)
    return "".join(f"{Element.from_Z(int(spec.grid.cell_to_z[r, c])).symbol}{int(counts[r, c])}" for r, c in zip(rows, cols))


def prior_compositions(loaded: LoadedModel, n: int, generator: torch.Generator | None = None) -> list[str]:
    """`n` cell formulas drawn from the checkpoint's learned composition prior."""
    if loaded.prior is None:
        raise ValueError("this checkpoint has no composition prior (trained before it existed): use unconditional='joint'")
    sequences = loaded.prior.sample(n, generator=generator)
    return [formula_of(loaded.prior.counts(seq, loaded.spec.grid.shape), loaded.spec) for seq in sequences]


def _rows(decoded, ids: list[str], targets: Sequence[str | None], batch: int, source: str) -> pd.DataFrame:
    rows = []
    for crystal, structure_id, target in zip(decoded, ids, targets):
        base = {"id": structure_id, "split": "", "source": source}
        if crystal.valid:
            row = {**base, **describe(crystal.structure), "structure": structure_to_json(crystal.structure)}
        else:
            row = {**base, "formula": None, "reduced_formula": None, "chemsys": None, "n_sites": 0, "n_elements": 0,
                   "structure": None}
        rows.append({**row, "valid": crystal.valid, "reason": crystal.reason, "target_formula": target, "batch": batch})
    frame = pd.DataFrame(rows, columns=[*CORE_COLUMNS, *GENERATED_EXTRA])
    return frame.astype({"n_sites": "int32", "n_elements": "int32", "batch": "int32", "valid": bool})


def _write_part(frame: pd.DataFrame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")


def plan_batches(config: GenerateConfig, spec: UniMatSpec) -> list[list[str | None]]:
    """The targets of every batch, validated up front (a bad composition fails before any work)."""
    targets = _targets(config, spec)
    return [targets[i : i + config.batch_size] for i in range(0, len(targets), config.batch_size)]


def part_path(out_dir: str | Path, batch: int) -> Path:
    return Path(out_dir) / f"part-{batch:05d}.parquet"


def generate_part(config: GenerateConfig, batch: int, targets: Sequence[str | None], loaded: LoadedModel) -> dict:
    """Sample, decode and write one batch (skipped if its part exists); returns a small summary."""
    path = part_path(config.out_dir, batch)
    config = loaded.recommended(config)
    if path.exists():
        valid = pq.read_table(path, columns=["valid"]).column("valid").to_pylist()
        return {"part": str(path), "n": len(valid), "n_valid": sum(valid), "skipped": True}
    device = loaded.device
    generator = torch.Generator(device="cpu").manual_seed(config.seed * 1_000_003 + batch)
    structure_targets = list(targets)
    free = [i for i, t in enumerate(targets) if t is None]
    if free and config.unconditional == "composition-first" and loaded.prior is not None:
        for i, formula in zip(free, prior_compositions(loaded, len(free), generator)):
            structure_targets[i] = formula
    coords, lattice = sample_batch(loaded, structure_targets, sampler=config.sampler, steps=config.steps,
                                   guidance=config.guidance, noise_scale=config.noise_scale,
                                   generator=generator if device.type == "cpu" else None)
    decoded = decode(coords, lattice, loaded.spec)
    ids = [f"gen-{batch:05d}-{i:05d}" for i in range(len(targets))]
    source = f"unimat:{Path(config.checkpoint).name}@step{loaded.step}"
    frame = _rows(decoded, ids, targets, batch, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_part(frame, path)
    return {"part": str(path), "n": len(frame), "n_valid": int(frame["valid"].sum()), "skipped": False}


def generate(config: GenerateConfig, loaded: LoadedModel | None = None,
             on_batch: Callable[[int, int, int], None] | None = None) -> GenerateSummary:
    """Generate `num_samples` (or K per composition), writing one parquet part per batch."""
    if not config.checkpoint or not config.out_dir:
        raise ValueError("GenerateConfig needs its checkpoint and out_dir")
    device = pick_device(config.device, config.cpu_threads)
    loaded = loaded or load_model(config.checkpoint, device, use_ema=config.use_ema)
    config = loaded.recommended(config)
    batches = plan_batches(config, loaded.spec)
    summary = GenerateSummary(config.out_dir)
    start = time.perf_counter()
    lanes = sampling_lanes(loaded.device)
    parts = map_in_lanes(lambda batch: generate_part(config, batch, batches[batch], loaded), range(len(batches)), lanes)
    for b, part in enumerate(parts):
        summary.parts.append(part["part"])
        summary.n_generated += part["n"]
        summary.n_valid += part["n_valid"]
        summary.n_skipped_parts += int(part["skipped"])
        if on_batch is not None:
            on_batch(b + 1, len(batches), summary.n_generated)
    summary.seconds = time.perf_counter() - start
    return summary


def read_generated(out_dir: str | Path) -> pd.DataFrame:
    """All parts of a generation folder as one frame (rows in batch order)."""
    parts = sorted(Path(out_dir).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no generated parts in {out_dir}: run `unimat generate` first")
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def export_cifs(frame: pd.DataFrame, out_dir: str | Path) -> int:
    """Write one CIF per valid generated structure (named by id); returns how many were written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for structure_id, text in zip(frame["id"], frame["structure"]):
        if text:
            structure_from_json(text).to(filename=str(out / f"{structure_id}.cif"))
            written += 1
    return written
