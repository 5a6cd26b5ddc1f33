"""The benchmark splits shipped inside the package (see unimat_core/data/README.md).

perov_5 and carbon_24 val/test from the CDVAE benchmark (MIT; provenance and licences in
that README). Their train splits are not bundled: they were not available offline.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from unimat_core.datasets.cdvae_csv import LoadResult, read_cdvae_csv

BUNDLED_DATASETS: dict[str, tuple[str, ...]] = {"perov_5": ("val", "test"), "carbon_24": ("val", "test")}


def data_dir() -> Path:
    return Path(str(resources.files("unimat_core") / "data"))


def bundled_csv_paths(name: str) -> dict[str, Path]:
    if name not in BUNDLED_DATASETS:
        raise KeyError(f"unknown bundled dataset {name!r}; bundled: {sorted(BUNDLED_DATASETS)}")
    return {split: data_dir() / name / f"{split}.csv.gz" for split in BUNDLED_DATASETS[name]}


def load_bundled(name: str, splits: tuple[str, ...] | None = None, workers: int | None = None) -> LoadResult:
    """Structure table of a bundled dataset; `splits` defaults to every bundled split."""
    paths = bundled_csv_paths(name)
    splits = splits or tuple(paths)
    unknown = [s for s in splits if s not in paths]
    if unknown:
        raise KeyError(f"{name} has no bundled split(s) {unknown}; bundled: {list(paths)}")
    return LoadResult.concat([read_cdvae_csv(paths[s], split=s, source=f"cdvae:{name}", workers=workers) for s in splits])
