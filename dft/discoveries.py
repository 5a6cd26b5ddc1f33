"""The campaign's discovery table: every round's new crystals, each found once (no Prefect).

`<campaign>/discoveries.parquet` holds the scored (converged) candidates of every round that match neither
a known crystal (the fetched dataset, every split, plus any other known table the caller passes) nor a
crystal of an earlier round nor a lower-energy candidate of the same round, with the round that found
each. Matching is pymatgen's `StructureMatcher` (default tolerances: ltol 0.2, stol 0.3, angle_tol 5),
compared only within one reduced formula. Rerunning a round replaces that round's rows (never duplicates
them); rows of other rounds are kept as they are. `rounds.parquet` keeps one row of counts per round.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

from dft.batch import read_relaxed
from unimat_core import atomic
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures, structure_from_json

COLUMNS = ["id", "round", "candidate_id", "formula", "reduced_formula", "target_formula", "kind", "energy_per_atom",
           "formation_energy_per_atom", "e_above_hull", "decomposition_energy", "stable", "metastable", "structure"]


def _reduced(formula: str) -> str:
    return Composition(formula).reduced_formula


def round_candidates(layout: RunLayout, kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """The round's scored candidates (finite decomposition energy: converged, on the hull's scale) with their
    relaxed structures, lowest decomposition energy first."""
    scores = pd.read_parquet(layout.require(layout.scores, made_by="score"))
    scores = scores[np.isfinite(scores["decomposition_energy"].astype(float)) & scores["relax_converged"]]
    relaxed = read_relaxed(layout.relaxed).drop_duplicates("id").set_index("id")
    generated = pd.concat(pd.read_parquet(p, columns=["id", "target_formula"])
                          for p in layout.require_parts(layout.generated, made_by="generate")).set_index("id")
    frame = scores.assign(candidate_id=scores["id"], round=layout.round,
                          structure=scores["id"].map(relaxed["structure"]),
                          target_formula=scores["id"].map(generated["target_formula"]),
                          kind=scores["id"].map(kinds or {}).fillna(""))
    frame["id"] = [f"r{layout.round:04d}-{cid}" for cid in frame["candidate_id"]]
    frame["reduced_formula"] = [_reduced(f) for f in frame["formula"]]
    frame = frame[frame["structure"].notna()].sort_values("decomposition_energy", kind="stable")
    return frame[COLUMNS].reset_index(drop=True)


def known_structures(tables: Iterable[str | Path], formulas: set[str]) -> dict[str, list[Structure]]:
    """Known crystals of the given reduced formulas, grouped by reduced formula (only those are read)."""
    out: dict[str, list[Structure]] = {}
    for table in tables:
        frame = read_structures(table, columns=["reduced_formula", "structure"])
        frame = frame[frame["reduced_formula"].isin(formulas) & frame["structure"].notna()]
        for formula, text in zip(frame["reduced_formula"], frame["structure"]):
            out.setdefault(formula, []).append(structure_from_json(text))
    return out


def read_discoveries(layout: RunLayout) -> pd.DataFrame:
    path = layout.discoveries
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=COLUMNS)


def merge_round(layout: RunLayout, candidates: pd.DataFrame, known_tables: Iterable[str | Path],
                matcher: StructureMatcher | None = None) -> dict:
    """Add the round's new crystals to discoveries.parquet (atomically) and return what was found."""
    matcher = matcher or StructureMatcher()
    number = layout.round
    table = read_discoveries(layout)
    table = table[table["round"] != number]  # a rerun of this round replaces its rows
    earlier = table[table["round"] < number]
    formulas = set(candidates["reduced_formula"])
    known = known_structures(known_tables, formulas)
    seen: dict[str, list[Structure]] = {}
    for formula, text in zip(earlier["reduced_formula"], earlier["structure"]):
        if formula in formulas:
            seen.setdefault(formula, []).append(structure_from_json(text))
    keep, why = [], {"known": 0, "earlier_round": 0, "this_round": 0}
    accepted: dict[str, list[Structure]] = {}
    for formula, text in zip(candidates["reduced_formula"], candidates["structure"]):
        structure = structure_from_json(text)
        if any(matcher.fit(structure, other) for other in known.get(formula, ())):
            keep.append(False)
            why["known"] += 1
        elif any(matcher.fit(structure, other) for other in seen.get(formula, ())):
            keep.append(False)
            why["earlier_round"] += 1
        elif any(matcher.fit(structure, other) for other in accepted.get(formula, ())):
            keep.append(False)
            why["this_round"] += 1
        else:
            keep.append(True)
            accepted.setdefault(formula, []).append(structure)
    new = candidates[np.array(keep, dtype=bool)] if len(candidates) else candidates
    merged = pd.concat([table, new], ignore_index=True) if len(table) else new.reset_index(drop=True)
    merged = merged.astype({"round": "int64"}).sort_values(["round", "decomposition_energy"], kind="stable")
    with atomic.atomic_path(layout.discoveries) as tmp:
        merged[COLUMNS].to_parquet(tmp, index=False)
    return {"n_scored": len(candidates), "n_new": len(new), "n_new_stable": int(new["stable"].astype(bool).sum()),
            "n_new_metastable": int(new["metastable"].astype(bool).sum()), "duplicates": why, "n_total": len(merged)}


def round_stats(layout: RunLayout, merge: dict, n_generated: int, use_metastable: bool = False) -> dict:
    """One row of rounds.parquet: the round's candidates, its stable and new finds, the median energy above the
    hull of its converged candidates and its S.U.N. rate (new stable finds / relaxed candidates)."""
    scores = pd.read_parquet(layout.scores)
    converged = scores[scores["relax_converged"] & np.isfinite(scores["e_above_hull"].astype(float))]
    flag = "metastable" if use_metastable else "stable"
    new_stable = merge["n_new_metastable" if use_metastable else "n_new_stable"]
    row = {"round": layout.round, "n_generated": n_generated, "n_relaxed": len(scores), "n_converged": len(converged),
           "n_stable": int(converged[flag].astype(bool).sum()), "n_new": merge["n_new"], "n_sun": new_stable,
           "median_e_above_hull": float(converged["e_above_hull"].median()) if len(converged) else float("nan"),
           "sun_rate": new_stable / len(scores) if len(scores) else float("nan")}
    path = layout.round_stats
    table = pd.DataFrame([row])
    if path.exists():
        earlier = pd.read_parquet(path, columns=list(row))
        table = pd.concat([earlier[earlier["round"] != layout.round], table], ignore_index=True)
    table = table.astype({"round": "int64"}).sort_values("round")
    table["cumulative_stable"] = table["n_stable"].cumsum()
    table["cumulative_new"] = table["n_new"].cumsum()
    table["cumulative_sun"] = table["n_sun"].cumsum()
    with atomic.atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return row


def finetune_frame(layout: RunLayout, cutoff: float, training_split: str | None, seed: int) -> pd.DataFrame:
    """What round `layout.round` fine-tunes on: the finds of earlier rounds within `cutoff` eV/atom of the hull,
    plus as many crystals of the model's training split (replayed, so the model does not forget them), as a
    structure table whose rows are all split 'train'. Empty when there is no such find."""
    from unimat_core.structure_table import records_to_frame

    table = read_discoveries(layout)
    finds = table[(table["round"] < layout.round) & (table["e_above_hull"].astype(float) <= cutoff)]
    if finds.empty:
        return finds
    structures = [structure_from_json(s) for s in finds["structure"]]
    frame = records_to_frame(structures, list(finds["id"]), split="train", source="discoveries")
    known = read_structures(layout.structures)
    if training_split is not None:
        known = known[known["split"] == training_split]
    replay = known.iloc[np.random.default_rng(seed).permutation(len(known))[:len(finds)]].assign(split="train")
    return pd.concat([frame, replay[frame.columns]], ignore_index=True)
