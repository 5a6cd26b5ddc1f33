"""One line per failure: what a relaxation records in its `error` column instead of raising."""

from __future__ import annotations

import traceback


def short_error(exc: BaseException) -> str:
    """Exception type, message and the innermost frame, at most 500 characters."""
    root = getattr(exc, "parent_error", None) or exc  # quacc wraps failures in JobFailure
    last = traceback.extract_tb(root.__traceback__)[-1:] if root.__traceback__ else []
    where = f" (at {last[0].name} in {last[0].filename.rsplit('/', 1)[-1]})" if last else ""
    return f"{type(root).__name__}: {root}{where}"[:500]
