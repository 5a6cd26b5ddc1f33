"""Tensorized datasets on disk: .npy shards referenced from a parquet manifest.

Layout of a tensor dataset folder:

    spec.json                  UniMatSpec.as_dict() + the input hash it was built from
    manifest.parquet           id, split, reduced_formula, n_sites, shard, row  (one row per crystal)
    rejected.parquet           id, split, reason  (inputs that could not be encoded)
    shards/coords-00000.npy    float32 [n, L, H, W, 3]
    shards/lattice-00000.npy   float32 [n, 6]

Why .npy shards and not parquet list columns: training reads the same dense float32 blocks
every epoch; `np.load(mmap_mode="r")` maps them with no parsing or copying and
`torch.from_numpy` shares the memory, whereas Arrow fixed-size lists would have to be
flattened and reshaped per batch. The parquet manifest keeps the small, queryable metadata
(which crystal is where, its split and formula) next to them.

The folder is written under a temporary name and renamed when complete, so a killed job never
leaves a half-written dataset that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field
from pymatgen.core import Structure

from unimat_core.atomic import atomic_path
from unimat_core.representation import UniMatSpec, encode
from unimat_core.settings import Config, option
from unimat_core.structure_table import read_structure_text, read_structures

MANIFEST = "manifest.parquet"
SPEC = "spec.json"
REJECTED = "rejected.parquet"


class TensorizeConfig(Config):
    """Every tensorize setting, declared once: what `tensorize_frame` reads and the `unimat tensorize` options
    (flows.params.TensorizeParams is this config plus the stage's record rules)."""

    ADDED_LATER = frozenset({"niggli"})

    max_atoms_per_element: int | None = Field(default=None, ge=1, le=256, description="UniMat L (default: fitted "
                                              "to the data)")
    shard_size: int = Field(default=4096, ge=1, description="structures per tensor shard")
    crop_grid: bool = Field(default=False, description="keep only the grid rows/columns holding the data's elements "
                            "(smaller, faster model that cannot place other elements)")
    max_sites: int | None = option("--tensorize-max-sites", "cells with more sites are left out (with their reason), "
                                   "so one outlier cannot widen the tensor of every crystal (None: no cap)",
                                   default=64, ge=1)
    niggli: bool = Field(default=False, description="encode each cell Niggli-reduced (the same crystal in its "
                         "canonical, least skewed cell, as CDVAE's loaders do): the model then learns one cell per "
                         "crystal instead of whatever cell the source stored")


@dataclass
class TensorizeSummary:
    """Small result of a tensorize run (safe to pass between workflow steps)."""

    path: str
    n_encoded: int
    n_rejected: int
    n_shards: int
    max_atoms_per_element: int
    input_hash: str
    reused: bool = False
    warnings: list[str] = field(default_factory=list)  # decisions the user should see (e.g. L set by outliers)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of the columns that determine the tensors (ids, splits, structures)."""
    digest = hashlib.sha256()
    for column in ("id", "split", "structure"):
        digest.update(pd.util.hash_pandas_object(frame[column], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


_FIT_DEFAULTS = {"crop_grid": False, "max_atoms_per_element": None, "max_sites": None, "niggli": False}  # spec.json files without "fit"


def _existing(out_dir: Path, input_hash: str, spec: UniMatSpec | None, fit: dict) -> dict | None:
    spec_file = out_dir / SPEC
    if not (spec_file.exists() and (out_dir / MANIFEST).exists()):
        return None
    stored = json.loads(spec_file.read_text())
    if stored.get("input_hash") != input_hash:
        return None
    if spec is not None and stored["spec"] != spec.as_dict():
        return None
    if {**_FIT_DEFAULTS, **stored.get("fit", {})} != fit:
        return None
    return stored


def _readable(frame: pd.DataFrame, max_sites: int | None) -> tuple[pd.DataFrame, list[Structure], pd.DataFrame]:
    """(rows to encode, their structures, rejected rows): unreadable structures and cells beyond the size cap
    are rejected with their reason instead of stopping the stage or widening the tensor for every crystal."""
    keep, structures, rejected = [], [], []
    for position, text in enumerate(frame["structure"]):
        structure, reason = read_structure_text(text)
        if structure is not None and max_sites is not None and len(structure) > max_sites:
            reason = f"{len(structure)} sites > max_sites {max_sites} (the tensorize size cap)"
        if reason:
            rejected.append((position, reason))
        else:
            keep.append(position)
            structures.append(structure)
    bad = [p for p, _ in rejected]
    return (frame.iloc[keep].reset_index(drop=True), structures,
            pd.DataFrame({"id": frame["id"].iloc[bad].astype(str).tolist(), "split": frame["split"].iloc[bad].tolist(),
                          "reason": [r for _, r in rejected]}, dtype=str))


def outlier_warning(structures: list[Structure], ids: list[str], slots: int) -> str | None:
    """A warning when L (slots per element, paid by every crystal) is at least twice what all but the
    largest 1% of crystals need: a few outliers then inflate the whole tensor."""
    if len(structures) < 2:
        return None
    need = np.array([int(np.ceil(max(s.composition.values()))) for s in structures])
    typical = int(np.sort(need)[-max(1, len(need) // 100) - 1])
    if slots < 2 * typical:
        return None
    big = [ids[i] for i in np.flatnonzero(need > typical)]
    return (f"L={slots} slots per element (paid by every crystal) is set by {len(big)} of {len(need)} crystals "
            f"(e.g. {', '.join(big[:3])}); the others need at most {typical}: pass --max-atoms-per-element {typical} "
            "(or a lower --tensorize-max-sites) to leave them out instead")


def tensorize_frame(frame: pd.DataFrame, out_dir: str | Path, spec: UniMatSpec | None = None,
                    config: TensorizeConfig | None = None, **settings) -> TensorizeSummary:
    """Encode a structure table into a tensor dataset folder; reuse it if inputs, spec and fit settings match.

    `config` (or its fields given by name in `settings`; the rest keep their declared defaults): with
    `spec=None` the spec is fitted to the data (smallest L that holds every crystal unless
    `max_atoms_per_element` is given; the grid cropped to the data's elements with `crop_grid`).
    Crystals that cannot be read or encoded, or have more than `max_sites` sites, go to
    rejected.parquet with the reason.
    """
    if config is not None and settings:
        raise TypeError("give a TensorizeConfig or its fields by name, not both")
    config = config or TensorizeConfig(**settings)
    max_atoms_per_element, max_sites, crop_grid = config.max_atoms_per_element, config.max_sites, config.crop_grid
    out_dir = Path(out_dir)
    input_hash = frame_hash(frame)
    fit = {"crop_grid": crop_grid, "max_atoms_per_element": max_atoms_per_element, "max_sites": max_sites,
           "niggli": config.niggli}
    stored = _existing(out_dir, input_hash, spec, fit)
    if stored is not None:
        manifest = pd.read_parquet(out_dir / MANIFEST, columns=["shard"])
        rejected = pd.read_parquet(out_dir / REJECTED, columns=["id"])
        return TensorizeSummary(str(out_dir), len(manifest), len(rejected), int(manifest["shard"].nunique()),
                                stored["spec"]["max_atoms_per_element"], input_hash, reused=True,
                                warnings=stored.get("warnings", []))

    frame, structures, unreadable = _readable(frame, max_sites)
    warnings = []
    if spec is None:
        ordered = [s for s in structures if s.is_ordered]
        spec = UniMatSpec.fit(ordered, crop_grid=crop_grid, max_atoms_per_element=max_atoms_per_element,
                              niggli=config.niggli)
        if max_atoms_per_element is None:
            ordered_ids = [i for i, s in zip(frame["id"].astype(str), structures) if s.is_ordered]
            warnings = [w for w in [outlier_warning(ordered, ordered_ids, spec.max_atoms_per_element)] if w]
    with atomic_path(out_dir) as tmp:  # a killed run leaves the old dataset (or none), never half of one
        (tmp / "shards").mkdir(parents=True)
        ids = frame["id"].astype(str).tolist()
        manifest_parts, rejected_parts, n_shards = [], [unreadable] if len(unreadable) else [], 0
        for start in range(0, len(structures), config.shard_size):
            stop = min(start + config.shard_size, len(structures))
            batch = encode(structures[start:stop], spec, ids=ids[start:stop], on_error="ignore")
            sub = frame.iloc[start:stop]
            if batch.failures:
                rows = [f.index for f in batch.failures]
                rejected_parts.append(pd.DataFrame({"id": [f.structure_id for f in batch.failures],
                                                    "split": sub["split"].iloc[rows].tolist(),
                                                    "reason": [f.reason for f in batch.failures]}))
            if not len(batch):
                continue
            np.save(tmp / "shards" / f"coords-{n_shards:05d}.npy", batch.coords)
            np.save(tmp / "shards" / f"lattice-{n_shards:05d}.npy", batch.lattice)
            kept = sub.set_index("id").loc[batch.ids]
            manifest_parts.append(pd.DataFrame({
                "id": batch.ids, "split": kept["split"].to_numpy(), "reduced_formula": kept["reduced_formula"].to_numpy(),
                "n_sites": kept["n_sites"].to_numpy(np.int32), "shard": np.int32(n_shards),
                "row": np.arange(len(batch), dtype=np.int32),
            }))
            n_shards += 1

        manifest = pd.concat(manifest_parts, ignore_index=True) if manifest_parts else pd.DataFrame(
            {"id": [], "split": [], "reduced_formula": [], "n_sites": np.zeros(0, np.int32), "shard": np.zeros(0, np.int32), "row": np.zeros(0, np.int32)})
        rejected = pd.concat(rejected_parts, ignore_index=True) if rejected_parts else pd.DataFrame({"id": [], "split": [], "reason": []}, dtype=str)
        manifest.to_parquet(tmp / MANIFEST, index=False)
        rejected.to_parquet(tmp / REJECTED, index=False)
        (tmp / SPEC).write_text(json.dumps({"spec": spec.as_dict(), "input_hash": input_hash, "fit": fit,
                                            "warnings": warnings}, indent=1))
    return TensorizeSummary(str(out_dir), len(manifest), len(rejected), n_shards, spec.max_atoms_per_element, input_hash,
                            warnings=warnings)


def tensorize_file(structures_path: str | Path, out_dir: str | Path, spec: UniMatSpec | None = None,
                   config: TensorizeConfig | None = None, **settings) -> TensorizeSummary:
    return tensorize_frame(read_structures(structures_path), out_dir, spec, config, **settings)


def read_spec(folder: str | Path) -> UniMatSpec | None:
    """The spec of a tensor dataset folder (None when it has none yet)."""
    path = Path(folder) / SPEC
    return UniMatSpec.from_dict(json.loads(path.read_text())["spec"]) if path.exists() else None


class TensorDataset:
    """Read side of a tensor dataset folder; shards are memory-mapped, never fully loaded."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).exists():
            raise FileNotFoundError(f"{self.path} is not a tensor dataset: {MANIFEST} is missing (run `unimat tensorize`)")
        stored = json.loads((self.path / SPEC).read_text())
        self.spec = UniMatSpec.from_dict(stored["spec"])
        self.input_hash: str = stored["input_hash"]
        self.manifest = pd.read_parquet(self.path / MANIFEST)
        self._coords: dict[int, np.ndarray] = {}
        self._lattice: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._coords:
            self._coords[shard] = np.load(self.path / "shards" / f"coords-{shard:05d}.npy", mmap_mode="r")
            self._lattice[shard] = np.load(self.path / "shards" / f"lattice-{shard:05d}.npy", mmap_mode="r")
        return self._coords[shard], self._lattice[shard]

    def select(self, split: str | None = None) -> pd.DataFrame:
        return self.manifest if split is None else self.manifest[self.manifest["split"] == split]

    def load(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every crystal of a split in memory: (coords, lattice, ids)."""
        rows = self.select(split)
        return self._gather(rows)

    def _gather(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
        coords = np.empty((len(rows), *self.spec.shape), dtype=np.float32)
        lattice = np.empty((len(rows), 6), dtype=np.float32)
        shards = rows["shard"].to_numpy()
        positions = np.arange(len(rows))
        for shard in np.unique(shards):
            mask = shards == shard
            c, l = self._shard(int(shard))
            take = rows["row"].to_numpy()[mask]
            coords[positions[mask]] = c[take]
            lattice[positions[mask]] = l[take]
        return coords, lattice, rows["id"].tolist()

    def iter_batches(self, batch_size: int, *, split: str | None = None, shuffle: bool = True, seed: int = 0,
                     drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """One pass over a split in batches, reading only the rows each batch needs."""
        rows = self.select(split)
        order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if drop_last and len(index) < batch_size:
                return
            yield self._gather(rows.iloc[index])


def training_split(dataset: str, requested: str | None) -> str | None:
    """The requested split, else 'train' when the dataset has one, else 'val' (bundled sets lack train)."""
    if requested:
        return requested
    splits = set(TensorDataset(dataset).manifest["split"])
    return "train" if "train" in splits else "val" if "val" in splits else None


def training_split_of(layout) -> str | None:
    """The split the campaign's model was trained on (train/config.json, else the train stage's choice
    for the tensorized data); None = every row (also when neither exists yet)."""
    config = layout.train_config
    if config.exists():
        return json.loads(config.read_text()).get("split")
    return training_split(str(layout.tensors), None) if layout.tensors.exists() else None
