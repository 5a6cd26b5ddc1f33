"""Per-structure analysis: parse, validity, density, element count, then fingerprints.

Two passes, both over chunks of structure JSON in a process pool: `check_structures` (cheap:
parse + validity, every row) and `fingerprint_structures` (CrystalNN, ~0.1 s per perov_5
structure: only the rows the caller selects). Nothing here raises on bad input: every row
comes back with flags and a reason, so one bad structure never kills a batch.

As in CDVAE, a structure whose CrystalNN fingerprint cannot be computed counts as invalid.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unimat_core.metrics.fingerprints import (
    N_COMP_FEATURES,
    N_STRUCT_FEATURES,
    FingerprintError,
    composition_fingerprint,
    scale_composition,
    structure_fingerprint,
)
from unimat_core.metrics.parallel import WorkerPool, as_pool, chunk_size, chunked
from unimat_core.metrics.validity import MIN_VOLUME, composition_validity, finite_reason, structure_validity

CHECK_COLUMNS = ("has_structure", "valid_struct", "valid_comp", "reason", "reduced_formula", "density", "n_elements")


@dataclass
class Analysis:
    """Per-row flags (frame, in input order) + fingerprints (NaN rows where not computed)."""

    frame: pd.DataFrame  # CHECK_COLUMNS + fingerprint_ok, fingerprint_reason, valid
    struct_fp: np.ndarray  # [N, 61] averaged CrystalNN "ops"
    comp_fp: np.ndarray  # [N, 132] Magpie after CDVAE's CompScaler

    def __len__(self) -> int:
        return len(self.frame)


def _parse(text: object):
    """(structure, None) or (None, reason)."""
    from unimat_core.structure_table import read_structure_text

    structure, reason = read_structure_text(text)
    if structure is None:
        return None, reason
    bad = finite_reason(structure)
    return (None, bad) if bad else (structure, None)


def check_one(text: object, prior_reason: str | None = None) -> dict:
    """Parse + structural/compositional validity + density and element count of one structure JSON."""
    row = {"has_structure": False, "valid_struct": False, "valid_comp": False, "reason": prior_reason,
           "reduced_formula": None, "density": np.nan, "n_elements": 0}
    if prior_reason is not None:
        return row
    structure, row["reason"] = _parse(text)
    if structure is None:
        return row
    composition = structure.composition
    with warnings.catch_warnings():  # pymatgen warns about noble gases lacking electronegativities
        warnings.simplefilter("ignore", UserWarning)
        formula = composition.reduced_formula
    row.update(has_structure=True, reduced_formula=formula, n_elements=len(composition.elements),
               density=float(structure.density))
    row["valid_struct"], struct_reason = structure_validity(structure)
    row["valid_comp"], comp_reason = composition_validity(composition)
    row["reason"] = "; ".join(r for r in (struct_reason, comp_reason) if r) or None
    return row


def fingerprint_one(text: object) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(structure fp [61], scaled composition fp [132], None) or NaN arrays and the reason."""
    nan_struct, nan_comp = np.full(N_STRUCT_FEATURES, np.nan), np.full(N_COMP_FEATURES, np.nan)
    structure, reason = _parse(text)
    if structure is None:
        return nan_struct, nan_comp, reason
    if structure.volume < MIN_VOLUME:  # CrystalNN would search a near-infinite neighbour shell
        return nan_struct, nan_comp, "fingerprint skipped: cell volume < 0.1 A^3"
    try:
        struct_fp = structure_fingerprint(structure)
        comp_fp = scale_composition(composition_fingerprint(structure.composition))
    except FingerprintError as exc:
        return nan_struct, nan_comp, str(exc)
    except Exception as exc:
        return nan_struct, nan_comp, f"fingerprint failed: {type(exc).__name__}: {exc}"[:300]
    return struct_fp, comp_fp, None


def _check_chunk(chunk: Sequence[tuple[object, str | None]]) -> list[dict]:
    return [check_one(text, reason) for text, reason in chunk]


def _fingerprint_chunk(chunk: Sequence[object]) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    return [fingerprint_one(text) for text in chunk]


def check_structures(texts: Sequence[object], prior_reasons: Sequence[str | None] | None = None,
                     workers: int | WorkerPool = 1) -> pd.DataFrame:
    """CHECK_COLUMNS for every row, in order (cheap pass)."""
    prior = list(prior_reasons) if prior_reasons is not None else [None] * len(texts)
    items = list(zip(texts, prior))
    pool, owned = as_pool(workers)
    try:
        chunks = chunked(items, chunk_size(len(items), pool.n_workers, cap=1000))
        rows = [r for part in pool.map(_check_chunk, chunks, kind="check", n_items=len(items)) for r in part]
    finally:
        if owned:
            pool.close()
    frame = pd.DataFrame(rows, columns=list(CHECK_COLUMNS))
    return frame.astype({"has_structure": bool, "valid_struct": bool, "valid_comp": bool, "density": float,
                         "n_elements": "int32"})


def fingerprint_structures(texts: Sequence[object], workers: int | WorkerPool = 1
                           ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Fingerprints [N, 61], [N, 132] (NaN rows on failure) and a failure reason per row."""
    pool, owned = as_pool(workers)
    try:
        chunks = chunked(list(texts), chunk_size(len(texts), pool.n_workers))
        results = [r for part in pool.map(_fingerprint_chunk, chunks, kind="fingerprint", n_items=len(texts))
                   for r in part]
    finally:
        if owned:
            pool.close()
    struct_fp = np.array([r[0] for r in results]).reshape(len(results), N_STRUCT_FEATURES)
    comp_fp = np.array([r[1] for r in results]).reshape(len(results), N_COMP_FEATURES)
    return struct_fp, comp_fp, [r[2] for r in results]


def analyse_structures(texts: Sequence[object], prior_reasons: Sequence[str | None] | None = None,
                       workers: int | WorkerPool = 1, fingerprint_rows: Sequence[int] | None = None,
                       checked: pd.DataFrame | None = None) -> Analysis:
    """Checks for every row (or the given `checked` frame), fingerprints for `fingerprint_rows`
    (default: every readable row).

    `valid` = struct valid and comp valid and (fingerprint ok, for rows that were fingerprinted).
    """
    frame = check_structures(texts, prior_reasons, workers) if checked is None else checked.copy()
    rows = np.flatnonzero(frame["has_structure"]) if fingerprint_rows is None else np.asarray(fingerprint_rows, int)
    struct_fp = np.full((len(frame), N_STRUCT_FEATURES), np.nan)
    comp_fp = np.full((len(frame), N_COMP_FEATURES), np.nan)
    fp_reason: list[str | None] = [None] * len(frame)
    fingerprinted = np.zeros(len(frame), dtype=bool)
    if len(rows):
        s_fp, c_fp, reasons = fingerprint_structures([texts[i] for i in rows], workers)
        struct_fp[rows], comp_fp[rows], fingerprinted[rows] = s_fp, c_fp, True
        for i, reason in zip(rows, reasons):
            fp_reason[i] = reason
    frame["fingerprinted"] = fingerprinted
    frame["fingerprint_ok"] = fingerprinted & np.isfinite(struct_fp).all(axis=1)
    frame["fingerprint_reason"] = fp_reason
    frame["valid"] = frame["valid_struct"] & frame["valid_comp"] & (frame["fingerprint_ok"] | ~frame["fingerprinted"])
    frame["reason"] = [
        "; ".join(r for r in (a, b) if r) or None for a, b in zip(frame["reason"], frame["fingerprint_reason"])
    ]
    return Analysis(frame, struct_fp, comp_fp)
