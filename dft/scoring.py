"""The score stage's core on a run folder (no Prefect; tasks/score.py wraps it): a reference hull under `<campaign>/score/`, candidate scores and the S.U.N. summary.

Offline default reference, every energy from the candidates' own calculator and relaxation settings:
- the elements and element pairs of the candidates' chemical systems, as elemental prototypes and binary
  prototype decorations (dft.reference_cache), relaxed once per chemical system into
  `<results_root>/_reference_cache/` and reused by every campaign with the same calculator and settings;
- up to `reference_size` of the dataset's own crystals (any split) inside those systems, relaxed like the
  candidates (`score/reference-relax/<calculator>-<settings digest>/part-*.parquet`, resumable).
Alternatives: the Materials Project (dft.mp_reference, needs MP_API_KEY) or a user parquet/CSV that declares
its `energy_scale` (dft.hull.read_reference).

One energy scale (dft.energy_scale): `score/reference.parquet` holds the hull actually used, its energies
already on the hull's scale (raw values and MP2020 corrections beside them), and `score/reference.json` says
which scale the reference came on, so the candidates get the same treatment. A pair of scales no correction
relates is refused before anything is written. Only converged relaxations are scored and flagged.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from dft.batch import read_relaxed
from dft.calculators import CalculatorConfig, energy_scale
from dft.energy_scale import MP2020_SCALE, EnergyScale, ScalePlan, on_hull_scale, plan_scales
from dft.hull import (make_reference, read_reference, reference_from_relaxed, reference_scale, score_candidates,
                      sun_summary, validate_reference, write_reference)
from dft.reference_cache import ReferenceCache, hull_systems
from dft.reference_checks import elemental_deviation, textbook_check
from dft.relax import RelaxConfig
from unimat_core import atomic
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures

log = logging.getLogger(__name__)
Warn = Callable[[str], None]

def candidate_table(layout: RunLayout, warn: Warn = log.warning) -> pd.DataFrame:
    """Relaxed candidates (id, formula, energy_per_atom, converged, error, calculator, structure)."""
    layout.require_parts(layout.relaxed, made_by="relax")
    frame = read_relaxed(layout.relaxed)
    unplaced = frame["formula"].isna()  # an unreadable input row has no composition to put on a hull
    if unplaced.any():
        warn(f"score: {int(unplaced.sum())} relaxed rows have no structure ({', '.join(frame.loc[unplaced, 'id'].head(3))}, "
             "...): not scored, see their error")
    return frame.loc[~unplaced, ["id", "formula", "energy_per_atom", "converged", "error", "calculator", "structure"]]


def check_calculator(layout: RunLayout, candidates: pd.DataFrame, calculator: str) -> None:
    """Energies on one hull must share one calculator: refuse a score with another one than the relax stage's."""
    used = sorted(set(candidates["calculator"]) - {""})
    if used and used != [calculator]:
        raise ValueError(f"candidates of {layout.campaign!r} were relaxed with {used}, the reference would use "
                         f"{calculator!r}: score with the relax stage's calculator (--calculator {used[0]})")


def choose_dataset_subset(layout: RunLayout, size: int, seed: int, candidate_formulas,
                          split: str | None = None) -> list[str]:
    """Up to `size` of the dataset's crystals (any split, all are known; or only `split`) inside some
    candidate's chemical system, in a seeded random order. Only those can lie on a candidate's hull."""
    if size == 0:
        return []
    table = read_structures(layout.require(layout.structures, made_by="fetch"), columns=["id", "chemsys", "split"])
    if split is not None:
        table = table[table["split"] == split]
    systems = [frozenset(Composition(f).chemical_system.split("-")) for f in set(candidate_formulas) if f]
    inside = np.array([any(frozenset(c.split("-")) <= s for s in systems) for c in table["chemsys"]], dtype=bool)
    order = np.random.default_rng(seed).permutation(len(table))
    return table["id"].iloc[[i for i in order if inside[i]][:size]].tolist()


def plan_reference(layout: RunLayout, size: int, seed: int, calculator: str, warn: Warn = log.warning) -> dict:
    """The chemical systems to take from the prototype cache (every element, and every pair of elements,
    of the converged candidates' systems) and the dataset ids to relax (small lists).

    Fails fast when the candidates were relaxed with another calculator: energies on one hull must share one.
    """
    candidates = candidate_table(layout, warn)
    check_calculator(layout, candidates, calculator)
    # converged candidates only: an unconverged energy is never scored, so its system needs no reference
    finite = candidates[np.isfinite(candidates["energy_per_atom"].astype(float)) & candidates["converged"].astype(bool)]
    dataset_ids = choose_dataset_subset(layout, size, seed, finite["formula"])  # inside those systems by choice
    systems = hull_systems(finite["formula"])
    return {"systems": systems, "dataset_ids": dataset_ids}


def reference_cache(layout: RunLayout, calculator: CalculatorConfig, relax: RelaxConfig) -> ReferenceCache:
    """The prototype cache shared by every campaign under this results root."""
    return ReferenceCache(layout.reference_cache, calculator, relax)


def reference_relax_dir(layout: RunLayout, calculator: CalculatorConfig, relax: RelaxConfig) -> Path:
    """Where the dataset crystals are relaxed; named by the cache key, so other settings never reuse them."""
    return layout.reference_relax_dir(reference_cache(layout, calculator, relax).folder.name)


def offline_reference(layout: RunLayout, systems: list[str], calculator: CalculatorConfig, relax: RelaxConfig,
                      warn: Warn = log.warning) -> pd.DataFrame:
    """Converged cached prototypes of `systems` + the relaxed dataset crystals, on the calculator's scale."""
    pieces = [reference_cache(layout, calculator, relax).read(systems)] if systems else []
    dataset = reference_relax_dir(layout, calculator, relax)
    if any(dataset.glob("part-*.parquet")):
        pieces.append(read_relaxed(dataset))
    scale = energy_scale(calculator)
    if not pieces:  # nothing converged and no dataset subset: every candidate is reported with missing elements
        warn("offline reference is empty: no converged candidate and no dataset structure")
        reference = make_reference([], [], [], "none")
        reference["energy_scale"] = str(scale)
        return reference
    return reference_from_relaxed(pd.concat(pieces, ignore_index=True), scale=scale)


def write_reference_hull(layout: RunLayout, kind: str, path: str | None, systems: list[str],
                         calculator: CalculatorConfig, relax: RelaxConfig, warn: Warn = log.warning) -> dict:
    """Write `score/reference.parquet` (on the hull's scale) and `score/reference.json` (its scales)."""
    if kind == "offline":
        reference = offline_reference(layout, systems, calculator, relax, warn)
    elif kind == "mp":
        from dft.mp_reference import reference_from_mp

        plan_scales(energy_scale(calculator), MP2020_SCALE)  # refuse before any query
        systems_mp = {Composition(f).chemical_system for f in candidate_table(layout)["formula"] if f}
        reference = reference_from_mp(systems_mp)
    else:
        reference = read_reference(path)
    candidate_scale = energy_scale(calculator)
    # an offline hull is made with the candidates' calculator: its scale, also when it holds no entry yet
    source_scale = candidate_scale if kind == "offline" and reference.empty else \
        reference_scale(reference, path or f"the {kind} reference")
    plan = plan_scales(candidate_scale, source_scale)  # refuses a bad pair
    aligned, rejected = on_hull_scale(reference, plan.correct_reference)
    aligned = aligned[~aligned["id"].isin(list(rejected))]
    aligned["energy_scale"] = str(plan.hull_scale)
    write_reference(validate_reference(aligned), layout.reference)
    counts = dict(Counter(_source_kind(i, s) for i, s in zip(aligned["id"], aligned["source"])))
    info = {"kind": kind, "source_scale": str(source_scale), "hull_scale": str(plan.hull_scale), "note": plan.note,
            "n_entries": len(aligned), "sources": counts, "rejected": rejected}
    atomic.write_text(layout.reference_info, json.dumps(info, indent=1))
    if rejected:
        warn(f"reference entries MP2020 could not correct, left out: {rejected}")
    return {"path": str(layout.reference), **info}


def _source_kind(rid: str, source: str) -> str:
    """elemental / prototype / dataset / materials_project / the user's source label, for counts."""
    head = str(rid).split(":")[0]
    if head in ("elemental", "prototype"):
        return head
    return "dataset" if str(source).startswith("relaxed:") else str(source)


def sanity_checks(reference: pd.DataFrame, hull_scale: str) -> dict:
    """Elemental energies and textbook binaries of a hull on MP's scale (empty on any other scale)."""
    if hull_scale != "mp2020":
        return {}
    elements = elemental_deviation(reference)
    return {"elements": elements, "textbook": textbook_check(reference)}


def score_run(layout: RunLayout, calculator: CalculatorConfig, metastable_cutoff: float,
              warn: Warn = log.warning) -> tuple[pd.DataFrame, dict, ScalePlan, dict]:
    """Formation / decomposition energies and stability flags of every converged candidate on the reference's
    hull, written to scores.parquet; returns the scores, the reference's info, the scale plan and the checks."""
    candidates = candidate_table(layout, warn)
    check_calculator(layout, candidates, calculator.name)
    reference = read_reference(layout.require(layout.reference, made_by="score"))
    info = json.loads(layout.require(layout.reference_info, made_by="score").read_text())
    plan = plan_scales(energy_scale(calculator), EnergyScale.parse(info["source_scale"]))
    aligned, rejected = on_hull_scale(candidates.rename(columns={"formula": "composition"}), plan.correct_candidates)
    scores = score_candidates(aligned, reference, metastable_cutoff=metastable_cutoff)
    extra = aligned.set_index("id")
    scores["formula"] = scores["id"].map(extra["composition"])
    scores["raw_energy_per_atom"] = scores["id"].map(extra["raw_energy_per_atom"])
    scores["correction_per_atom"] = scores["id"].map(extra["correction_per_atom"])
    scores["energy_scale"] = str(plan.hull_scale)
    scores["relax_converged"] = scores["id"].map(extra["converged"]).astype(bool)
    scores["relax_error"] = scores["id"].map(extra["error"]).fillna("")
    for rid, reason in rejected.items():  # MP2020 refused the entry: say so (an unconverged row keeps its reason)
        scores.loc[(scores["id"] == rid) & (scores["score_error"] == "no finite energy"), "score_error"] = reason
    with atomic.atomic_path(layout.scores) as tmp:
        scores.to_parquet(tmp, index=False)
    return scores, info, plan, sanity_checks(reference, info["hull_scale"])


def score_stats(scores: pd.DataFrame) -> dict:
    """Counts for the summary: stability flags only ever come from converged, scored rows."""
    scored = np.isfinite(scores["decomposition_energy"].astype(float))
    not_converged = ~scores["relax_converged"]
    missing = scores["missing_elements"] != ""
    return {"n_candidates": len(scores), "n_scored": int(scored.sum()), "n_stable": int(scores["stable"].sum()),
            "n_metastable": int(scores["metastable"].sum()), "n_missing_elements": int(missing.sum()),
            "n_not_converged": int(not_converged.sum()),
            "n_other_excluded": int((~scored & ~not_converged & ~missing).sum())}


def sun_of_run(layout: RunLayout, use_metastable: bool = False) -> dict:
    """S.U.N. counts (sun.json); uniqueness/novelty come from the evaluate stage's per_structure.parquet when it
    exists. Only candidates whose relaxation converged count as stable (an unconverged energy is not a minimum)."""
    scores = pd.read_parquet(layout.require(layout.scores, made_by="score"))
    unique = novel = None
    if layout.per_structure_metrics.exists():
        per = pd.read_parquet(layout.per_structure_metrics).drop_duplicates("id").set_index("id")
        if "unique" in per:
            unique = scores["id"].map(per["unique"]).fillna(False).astype(bool)
        if "novel" in per:
            novel = scores["id"].map(per["novel"]).fillna(False).astype(bool)
    summary = {k: float(v) if isinstance(v, float) else v  # numpy floats -> plain JSON numbers
               for k, v in sun_summary(scores, unique=unique, novel=novel, use_metastable=use_metastable).items()}
    atomic.write_text(layout.sun_summary, json.dumps(summary, indent=1))
    return summary
