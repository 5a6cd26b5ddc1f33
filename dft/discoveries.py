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


def _samples_of(layout: RunLayout, finds: pd.DataFrame) -> list[str | None]:
    """The generated sample each find relaxed from (its round's generate parts), None where it is gone."""
    text: dict[tuple[int, str], str] = {}
    for number in sorted(set(finds["round"].astype(int))):
        for part in sorted(layout.for_round(number).generated.glob("part-*.parquet")):
            frame = pd.read_parquet(part, columns=["id", "structure"]).dropna()
            text.update({(number, i): s for i, s in zip(frame["id"], frame["structure"])})
    return [text.get((int(r), c)) for r, c in zip(finds["round"], finds["candidate_id"])]


def finetune_frame(layout: RunLayout, cutoff: float, training_split: str | None, seed: int, checkpoint: str,
                   max_loss_ratio: float) -> tuple[pd.DataFrame, dict]:
    """What round `layout.round` fine-tunes `checkpoint` on: the finds of earlier rounds within `cutoff` eV/atom
    of the hull, plus as many crystals of the model's training split (replayed, so the model does not forget
    them), as a structure table whose rows are all split 'train' (empty when there is no such find), and counts.

    Each find enters in a form the model can learn from a few steps: its relaxed crystal when the model's loss
    on it is within `max_loss_ratio` times its median loss on the replayed crystals, else the sample it relaxed
    from (the model's own output, so inside what it knows). A relaxation can leave the family of cells the
    model was trained on (perov_5's are all cubic; CHGNet relaxes many samples into tilted cells), and a
    fine-tune on such crystals started at loss ~37 where the model's own is ~0.1 and made the model worse."""
    from unimat_core.model.familiarity import crystal_losses
    from unimat_core.structure_table import records_to_frame

    table = read_discoveries(layout)
    finds = table[(table["round"] < layout.round) & (table["e_above_hull"].astype(float) <= cutoff)]
    if finds.empty:
        return finds, {"n_finds": 0}
    known = read_structures(layout.structures)
    if training_split is not None:
        known = known[known["split"] == training_split]
    replay = known.iloc[np.random.default_rng(seed).permutation(len(known))[:len(finds)]].assign(split="train")
    relaxed = [structure_from_json(s) for s in finds["structure"]]
    samples = [structure_from_json(s) if s else None for s in _samples_of(layout, finds)]
    replayed = [structure_from_json(s) for s in replay["structure"]]
    all_losses = crystal_losses(checkpoint, replayed + relaxed)  # one model load for both
    reference, losses = float(np.nanmedian(all_losses[:len(replayed)])), all_losses[len(replayed):]
    as_relaxed = losses <= max_loss_ratio * reference  # NaN (cannot be encoded): False
    chosen = [r if ok else s for r, s, ok in zip(relaxed, samples, as_relaxed)]
    keep = [i for i, s in enumerate(chosen) if s is not None]
    frame = records_to_frame([chosen[i] for i in keep], [finds["id"].iloc[i] for i in keep], split="train",
                             source="discoveries")
    counts = {"n_finds": len(keep), "n_as_relaxed": int(as_relaxed[keep].sum()),
              "n_as_sample": int((~as_relaxed[keep]).sum()), "n_left_out": len(finds) - len(keep),
              "reference_loss": round(reference, 4),
              "median_relaxed_loss": round(float(np.nanmedian(losses)), 4) if np.isfinite(losses).any() else None}
    if not keep:
        return frame.iloc[:0], counts
    return pd.concat([frame, replay[frame.columns]], ignore_index=True), counts
