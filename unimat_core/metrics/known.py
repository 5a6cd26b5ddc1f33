"""Every known crystal a generated one could reproduce: the reference of the novelty check.

Novelty against the training split alone calls a sample that reproduces a known test-split crystal
"novel". The known set is every crystal we have: every split of the fetched table, every bundled split
of the same dataset (a fetch may take only some), and the structures of the score stage's reference hull
(relaxed dataset crystals and prototypes, or the Materials Project's entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition

KNOWN_COLUMNS = ("id", "structure", "reduced_formula", "known_from")


def _reduced(formula: str) -> str:
    return Composition(formula).reduced_formula


def known_table(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """The rows of a structure table or a reference hull that carry a structure, in the known-crystal layout."""
    if "structure" not in frame.columns:
        return pd.DataFrame(columns=list(KNOWN_COLUMNS))
    rows = frame[frame["structure"].notna() & (frame["structure"].astype(str) != "")]
    if "reduced_formula" in rows.columns:
        formulas = rows["reduced_formula"].tolist()
    else:  # a reference hull: composition only
        formulas = [_reduced(c) for c in rows["composition"]]
    return pd.DataFrame({"id": [f"{origin}:{i}" for i in rows["id"]], "structure": rows["structure"].tolist(),
                         "reduced_formula": formulas, "known_from": origin}, columns=list(KNOWN_COLUMNS))


def known_crystals(tables: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One table of every known crystal from `(origin, table)` pairs; a crystal listed twice under the same
    origin and id (e.g. a fetched split that is also a bundled split) is kept once."""
    frames = [known_table(frame, origin) for origin, frame in tables]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(KNOWN_COLUMNS))
    return pd.concat(frames, ignore_index=True).drop_duplicates("id").reset_index(drop=True)


def read_known(files: Sequence[tuple[str, str | Path]], bundled: str | None = None) -> pd.DataFrame:
    """Known crystals from `(origin, parquet path)` pairs (structure tables or reference hulls) and, by name,
    every split of a bundled dataset (origin: its name; give a fetched copy the same origin to count it once)."""
    tables: list[tuple[str, pd.DataFrame]] = []
    for origin, path in files:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"known-crystal table {path} ({origin}) does not exist")
        tables.append((origin, pd.read_parquet(path)))
    if bundled:
        from unimat_core.datasets.bundled import load_bundled

        tables.append((bundled, load_bundled(bundled).structures))
    return known_crystals(tables)
