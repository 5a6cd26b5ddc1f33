"""On-disk cache of a reference set's analysis (fingerprints are minutes of CrystalNN work).

Keyed by a hash of the table's ids and structure JSON plus the featurizer versions, so a
changed reference set or a matminer upgrade never reuses stale fingerprints. Written to a temp
folder and renamed, so a killed run leaves no half-written cache entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from unimat_core.atomic import atomic_path
from unimat_core.metrics.analysis import Analysis

CACHE_VERSION = "1"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("matminer", "pymatgen", "smact"):
        try:
            parts.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package}=?")
    return ",".join(parts)


def table_key(ids: Iterable[object], structures: Iterable[object]) -> str:
    """sha256 over (id, structure JSON) pairs in order, plus cache and featurizer versions."""
    digest = hashlib.sha256(f"unimat-metrics-cache/{CACHE_VERSION}/{_versions()}".encode())
    for structure_id, text in zip(ids, structures):
        digest.update(str(structure_id).encode())
        digest.update(b"\0")
        digest.update(b"" if text is None else str(text).encode())
        digest.update(b"\1")
    return digest.hexdigest()


def entry_dir(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"reference-{key[:24]}"


def load(cache_dir: str | Path, key: str) -> Analysis | None:
    folder = entry_dir(cache_dir, key)
    try:
        frame = pd.read_parquet(folder / "frame.parquet")
        return Analysis(frame, np.load(folder / "struct_fp.npy"), np.load(folder / "comp_fp.npy"))
    except (FileNotFoundError, OSError, ValueError):
        return None


def save(cache_dir: str | Path, key: str, analysis: Analysis) -> Path:
    folder = entry_dir(cache_dir, key)
    with atomic_path(folder, keep_existing=True) as tmp:  # another run wrote the same entry first: keep theirs
        tmp.mkdir()
        analysis.frame.to_parquet(tmp / "frame.parquet", index=False)
        np.save(tmp / "struct_fp.npy", analysis.struct_fp)
        np.save(tmp / "comp_fp.npy", analysis.comp_fp)
        (tmp / "key.txt").write_text(key + "\n")
    return folder
