"""Part files of a stage folder (`part-*.parquet`): a damaged one is set aside, never a blocker.

Parts are written atomically, so damage comes from outside (a full disk, a copy cut short, an edit).
A part that no longer reads is moved to `<folder>/_damaged/` (the underscore keeps it out of
`pandas.read_parquet(folder)` and of every `part-*` glob) and the stage that writes it redoes its rows.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

DAMAGED = "_damaged"


def damage_of(path: str | Path) -> str | None:
    """Why a parquet part cannot be read in full, or None when it reads."""
    try:
        pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - Arrow raises several types for truncated or garbled files
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def set_aside_if_damaged(path: str | Path) -> str | None:
    """Move an unreadable part to `_damaged/` beside it; returns a message naming it, or None when it reads."""
    path = Path(path)
    if not path.exists():
        return None
    reason = damage_of(path)
    if reason is None:
        return None
    target = path.parent / DAMAGED / path.name
    target.parent.mkdir(exist_ok=True)
    n = 1
    while target.exists():
        n += 1
        target = target.with_name(f"{path.stem}.{n}{path.suffix}")
    path.rename(target)
    return f"{path} could not be read ({reason}): moved to {target}"


def set_aside_damaged(folder: str | Path) -> list[str]:
    """Check every part of a stage folder; set aside the damaged ones (messages for the log)."""
    folder = Path(folder)
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    return [m for p in parts if (m := set_aside_if_damaged(p))]
