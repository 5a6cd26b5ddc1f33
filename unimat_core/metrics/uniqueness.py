"""Uniqueness and novelty with pymatgen's StructureMatcher, one reduced formula at a time.

Two structures can only match if they share a reduced formula, so we never compare across
formulas: each formula group is one independent job (run in a process pool). Within a group
the first occurrence of a structure is unique and later matches are duplicates. Novelty is
checked for each unique structure against the known structures of the same formula, and a
duplicate inherits the novelty of the structure it duplicates (saves N_dup x N_train fits).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from unimat_core.metrics.parallel import WorkerPool, as_pool


@dataclass(frozen=True)
class MatcherSettings:
    """StructureMatcher tolerances (pymatgen defaults)."""

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0

    def as_dict(self) -> dict:
        return asdict(self)


def _fits(matcher, a, b) -> bool:
    try:
        return bool(matcher.fit(a, b))
    except Exception:  # a matcher failure on odd cells means "no match", never a crash
        return False


def _judge_group(job: tuple[list[str], list[str] | None, dict]) -> tuple[list[bool], list[bool] | None]:
    """(unique flags, novel flags or None) of one formula group's generated structures."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from unimat_core.structure_table import structure_from_json

    gen_texts, train_texts, settings = job
    matcher = StructureMatcher(**settings)
    structures = [structure_from_json(t) for t in gen_texts]
    representatives: list[int] = []
    rep_of: list[int] = []
    for i, structure in enumerate(structures):
        match = next((r for r in representatives if _fits(matcher, structures[r], structure)), None)
        if match is None:
            representatives.append(i)
            rep_of.append(i)
        else:
            rep_of.append(match)
    unique = [rep_of[i] == i for i in range(len(structures))]
    if train_texts is None:
        return unique, None
    training = [structure_from_json(t) for t in train_texts]
    rep_novel = {r: not any(_fits(matcher, structures[r], t) for t in training) for r in representatives}
    return unique, [rep_novel[rep_of[i]] for i in range(len(structures))]


def uniqueness_novelty(gen_texts: Sequence[str], gen_formulas: Sequence[str],
                       train_texts: Sequence[str] | None = None, train_formulas: Sequence[str] | None = None,
                       settings: MatcherSettings = MatcherSettings(),
                       workers: int | WorkerPool = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Per generated structure: unique within the set, and novel w.r.t. the known structures (None without)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, formula in enumerate(gen_formulas):
        groups[formula].append(i)
    train_groups: dict[str, list[str]] = defaultdict(list)
    if train_texts is not None:
        for text, formula in zip(train_texts, train_formulas or []):
            if formula in groups and text:
                train_groups[formula].append(text)
    # biggest groups first so the pool is not left waiting on one long job at the end
    order = sorted(groups, key=lambda f: -len(groups[f]) * (1 + len(train_groups.get(f, ()))))
    jobs = [([gen_texts[i] for i in groups[f]], None if train_texts is None else train_groups.get(f, []),
             settings.as_dict()) for f in order]
    pool, owned = as_pool(workers)
    try:
        results = pool.map(_judge_group, jobs, kind="match", n_items=len(gen_texts))
    finally:
        if owned:
            pool.close()
    unique = np.zeros(len(gen_texts), dtype=bool)
    novel = None if train_texts is None else np.zeros(len(gen_texts), dtype=bool)
    for formula, (group_unique, group_novel) in zip(order, results):
        idx = groups[formula]
        unique[idx] = group_unique
        if novel is not None:
            novel[idx] = group_novel
    return unique, novel
