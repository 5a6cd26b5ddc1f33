"""The one atomic write: into a temporary name beside the target, then renamed over it, so a killed job
never leaves half a file (or half a folder) under the real name. Two writers of one path each use their own
temporary name; the last rename wins."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (a file or a folder); it replaces `path` when the block
    ends without an error, and is removed when it raises. A folder replaces an existing folder (removed first:
    the one moment a reader can find neither). `keep_existing`: the first writer wins, e.g. a cache entry that
    another process wrote meanwhile is kept and this copy dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if not (keep_existing and path.exists()):
            if tmp.is_dir() and path.is_dir():
                shutil.rmtree(path)
            try:
                tmp.replace(path)
            except OSError:
                if not (keep_existing and path.exists()):  # lost the race to another writer: keep theirs
                    raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
