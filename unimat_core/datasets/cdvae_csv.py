"""Reader for CDVAE-format CSVs (`,material_id,cif,<properties...>`), from any path.

CIF parsing is the slow part (~1 ms per crystal), so it runs in a process pool whose workers
return the finished table row (JSON structure + derived columns), never pymatgen objects.
Rows whose CIF does not parse are kept in `LoadResult.rejected` with the reason and the raw
text, so nothing is lost.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure

from unimat_core.structure_table import CORE_COLUMNS, conform, describe, structure_problem, structure_to_json

REJECTED_COLUMNS = ("id", "split", "source", "reason", "raw")


@dataclass
class LoadResult:
    """A structure table plus the rows that could not be read (columns `REJECTED_COLUMNS`)."""

    structures: pd.DataFrame
    rejected: pd.DataFrame

    @classmethod
    def concat(cls, parts: list[LoadResult]) -> LoadResult:
        return cls(
            pd.concat([p.structures for p in parts], ignore_index=True),
            pd.concat([p.rejected for p in parts], ignore_index=True),
        )


def parse_cif(cif: str) -> dict:
    """One CIF -> core columns (without id/split/source); raises ValueError with a reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structure = Structure.from_str(cif, fmt="cif")
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            raise ValueError(f"CIF does not parse: {type(exc).__name__}: {exc}") from exc
    problem = structure_problem(structure)
    if problem:
        raise ValueError(problem)
    return {**describe(structure), "structure": structure_to_json(structure)}


def _parse_many(cifs: list[str]) -> list[dict | str]:
    out: list[dict | str] = []
    for cif in cifs:
        try:
            out.append(parse_cif(cif if isinstance(cif, str) else ""))
        except ValueError as exc:
            out.append(str(exc))
    return out


def parse_cifs(cifs: list[str], workers: int | None = None, chunk_size: int = 256) -> list[dict | str]:
    """Parse in parallel; each item is the parsed row or the reason it failed."""
    workers = workers or min(os.cpu_count() or 1, 8)
    chunks = [cifs[i : i + chunk_size] for i in range(0, len(cifs), chunk_size)]
    if workers <= 1 or len(chunks) <= 1:
        return _parse_many(cifs)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [item for chunk in pool.map(_parse_many, chunks) for item in chunk]


def _split_from_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    return stem if stem in ("train", "val", "test") else ""


def check_cdvae_csv(path: str | Path) -> None:
    """Fail fast, naming the file, when it is not a CDVAE-format CSV with at least one row (reads its head only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file {path} not found" if not path.exists() else f"{path} is a folder, not a CSV file")
    try:
        head = pd.read_csv(path, nrows=2)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: a CDVAE-format CSV needs a header (,material_id,cif,...) and rows") from None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a CSV file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if "cif" not in head.columns:
        raise ValueError(f"{path} is not a CDVAE-format CSV: it has no 'cif' column (columns: {list(head.columns)[:8]})")
    if head.empty:
        raise ValueError(f"{path} has a header but no rows")


def read_cdvae_csv(path: str | Path, *, split: str | None = None, source: str | None = None, workers: int | None = None) -> LoadResult:
    """Read one CDVAE-format CSV (optionally .gz). The split defaults to the file name (train/val/test)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CDVAE CSV {path} does not exist")
    check_cdvae_csv(path)
    frame = pd.read_csv(path)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")])
    split = _split_from_name(path) if split is None else split
    source = source or f"csv:{path.name}"
    ids = frame["material_id"].astype(str) if "material_id" in frame.columns else pd.Series(
        [f"{path.stem}-{i}" for i in range(len(frame))]
    )
    properties = frame.drop(columns=[c for c in ("material_id", "cif") if c in frame.columns])
    properties = properties.rename(columns={c: f"source_{c}" for c in properties.columns if c in CORE_COLUMNS})

    parsed = parse_cifs(frame["cif"].tolist(), workers=workers)
    good = [i for i, item in enumerate(parsed) if isinstance(item, dict)]
    bad = [i for i, item in enumerate(parsed) if isinstance(item, str)]

    table = pd.DataFrame([parsed[i] for i in good], columns=[c for c in CORE_COLUMNS if c not in ("id", "split", "source")])
    table.insert(0, "id", ids.iloc[good].tolist())
    table["split"] = split
    table["source"] = source
    table = conform(table[list(CORE_COLUMNS)])
    for name in properties.columns:
        table[name] = properties[name].iloc[good].to_numpy()

    rejected = pd.DataFrame(
        {
            "id": ids.iloc[bad].tolist(),
            "split": [split] * len(bad),
            "source": [source] * len(bad),
            "reason": [parsed[i] for i in bad],
            "raw": frame["cif"].iloc[bad].astype(str).tolist(),
        },
        columns=list(REJECTED_COLUMNS),
    )
    return LoadResult(table, rejected)
