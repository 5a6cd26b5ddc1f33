"""Score stage: a reference hull under `<campaign>/score/`, candidate scores and the S.U.N. summary.

Offline default reference (every energy from the candidates' own calculator): elemental ground
states (dft.elemental, one file per element under `score/elemental/`) plus a small seeded subset
of the training split relaxed like the candidates (`score/reference-relax/part-*.parquet`). Both are
resumable. Alternatives: the Materials Project (dft.mp_reference, needs MP_API_KEY) or a user
parquet/CSV (dft.hull.read_reference). The reference actually used is `score/reference.parquet`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pymatgen.core import Composition

from dft.batch import read_relaxed
from dft.calculators import CalculatorConfig
from dft.elemental import elemental_references
from dft.hull import make_reference, read_reference, reference_from_relaxed, score_candidates, sun_summary, write_reference
from dft.relax import RelaxConfig
from tasks.artifacts import artifact_key, file_links, histogram_png, inline_image, markdown_table
from tasks.relax import pooled_calculator
from tasks.train import training_split_of
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures

TOP_COLUMNS = ["id", "formula", "energy_per_atom", "formation_energy_per_atom", "e_above_hull",
               "decomposition_energy", "stable", "metastable", "relax_converged"]


def _elements(formulas) -> set[str]:
    return {str(el) for formula in formulas if formula for el in Composition(formula).elements}


def candidate_table(layout: RunLayout) -> pd.DataFrame:
    """Relaxed candidates (id, formula, energy_per_atom, converged, error, calculator)."""
    layout.require_parts(layout.relaxed, made_by="relax")
    frame = read_relaxed(layout.relaxed)
    unplaced = frame["formula"].isna()  # an unreadable input row has no composition to put on a hull
    if unplaced.any():
        get_run_logger().warning("score: %d relaxed rows have no structure (%s, ...): not scored, see their error",
                                 int(unplaced.sum()), ", ".join(frame.loc[unplaced, "id"].head(3)))
    return frame.loc[~unplaced, ["id", "formula", "energy_per_atom", "converged", "error", "calculator"]]


def choose_training_subset(layout: RunLayout, size: int, seed: int, candidate_formulas) -> list[str]:
    """Up to `size` training-split ids inside some candidate's chemical system, in a seeded random order.

    Only those can lie on a candidate's hull; a structure outside every candidate's system would cost a
    relaxation (and its elements' references) without changing any decomposition energy."""
    if size == 0:
        return []
    table = read_structures(layout.require(layout.structures, made_by="fetch"), columns=["id", "chemsys", "split"])
    split = training_split_of(layout)
    if split is not None and (table["split"] == split).any():
        table = table[table["split"] == split]
    systems = [frozenset(Composition(f).chemical_system.split("-")) for f in set(candidate_formulas) if f]
    inside = np.array([any(frozenset(c.split("-")) <= s for s in systems) for c in table["chemsys"]], dtype=bool)
    order = np.random.default_rng(seed).permutation(len(table))
    return table["id"].iloc[[i for i in order if inside[i]][:size]].tolist()


@task(name="plan-reference")
def plan_reference(layout: RunLayout, size: int, seed: int, calculator: str) -> dict:
    """Elements needing a same-calculator elemental reference (those of converged candidates and of the
    training subset), and the training ids to relax (small lists).

    Fails fast when the candidates were relaxed with another calculator: energies on one hull must share one.
    """
    candidates = candidate_table(layout)
    used = sorted(set(candidates["calculator"]) - {""})
    if used and used != [calculator]:
        raise ValueError(f"candidates of {layout.campaign!r} were relaxed with {used}, the reference would use "
                         f"{calculator!r}: score with the relax stage's calculator (--calculator {used[0]})")
    # converged candidates only: an unconverged energy never counts as stable, so its elements need no corners
    finite = candidates[np.isfinite(candidates["energy_per_atom"].astype(float)) & candidates["converged"].astype(bool)]
    train_ids = choose_training_subset(layout, size, seed, finite["formula"])
    formulas = read_structures(layout.structures, columns=["id", "formula"]).set_index("id").loc[train_ids, "formula"]
    elements = sorted(_elements(finite["formula"]) | _elements(formulas))
    get_run_logger().info("reference plan: %d elements, %d training structures", len(elements), len(train_ids))
    return {"elements": elements, "train_ids": train_ids, "calculators": sorted(set(candidates["calculator"]) - {""})}


def calculator_slug(calculator: dict) -> str:
    """Folder name of a calculator's reference pieces, e.g. `chgnet` or `sevennet-7net-0`."""
    return "-".join(str(v) for v in (calculator["name"], calculator.get("model")) if v)


def elemental_dir(layout: RunLayout, calculator: dict) -> Path:
    return layout.stage_dir("score") / "elemental" / calculator_slug(calculator)


def reference_relax_dir(layout: RunLayout, calculator: dict) -> Path:
    return layout.stage_dir("score") / "reference-relax" / calculator_slug(calculator)


@task(name="elemental-references", retries=1)
def elemental_chunk(elements: list[str], out_dir: str, calculator: dict, relax: dict) -> dict:
    """Relax elemental prototypes for `elements`, one file per element (skipped when present)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done, failed = [], {}
    todo = [s for s in elements if not ((out / f"{s}.parquet").exists() or (out / f"{s}.failed.json").exists())]
    done += [s for s in elements if s not in todo]
    if todo:
        with pooled_calculator(CalculatorConfig.from_dict(calculator)) as built:
            for symbol in todo:
                path = out / f"{symbol}.parquet"
                try:
                    frame = elemental_references([symbol], built, RelaxConfig.from_dict(relax))
                except ValueError as exc:  # every prototype failed: recorded, the hull reports the element missing
                    (out / f"{symbol}.failed.json").write_text(json.dumps({"element": symbol, "reason": str(exc)}))
                    failed[symbol] = str(exc)
                    continue
                tmp = path.with_name(f".{path.name}.tmp")
                frame.to_parquet(tmp, index=False)
                tmp.replace(path)
                done.append(symbol)
    get_run_logger().info("elemental references: %d done, %d failed %s", len(done), len(failed), sorted(failed))
    return {"n_done": len(done), "failed": failed}


def read_elementals(out_dir: str | Path, elements: list[str]) -> pd.DataFrame | None:
    frames = [pd.read_parquet(p) for s in elements if (p := Path(out_dir) / f"{s}.parquet").exists()]
    return pd.concat(frames, ignore_index=True) if frames else None


@task(name="build-reference", retries=2, retry_delay_seconds=5)
def build_reference(layout: RunLayout, kind: str, path: str | None, elements: list[str], calculator: dict) -> dict:
    """Write `score/reference.parquet` from the relaxed pieces, the Materials Project or a user file."""
    if kind == "offline":
        pieces = reference_relax_dir(layout, calculator)
        relaxed = read_relaxed(pieces) if any(pieces.glob("part-*.parquet")) else None
        elemental = read_elementals(elemental_dir(layout, calculator), elements)
        pieces_found = [f for f in (relaxed, elemental) if f is not None]
        if pieces_found:
            reference = reference_from_relaxed(pd.concat(pieces_found, ignore_index=True))
        else:  # nothing converged and no training subset: every candidate is reported with missing elements
            get_run_logger().warning("offline reference is empty: no converged candidate and no training subset")
            reference = make_reference([], [], [], "none")
    elif kind == "mp":
        from dft.mp_reference import reference_from_mp

        systems = {Composition(f).chemical_system for f in candidate_table(layout)["formula"] if f}
        reference = reference_from_mp(systems)
    else:
        reference = read_reference(path)
    write_reference(reference, layout.reference)
    counts = dict(Counter(str(source).split(":")[0] for source in reference["source"]))
    get_run_logger().info("reference hull: %d entries %s -> %s", len(reference), counts, layout.reference)
    return {"path": str(layout.reference), "n_entries": len(reference), "sources": counts}


@task(name="score-candidates")
def score_relaxed(layout: RunLayout, metastable_cutoff: float, top_k: int = 20) -> dict:
    """Formation / decomposition energies and stability flags for every relaxed candidate -> scores.parquet."""
    candidates = candidate_table(layout)
    reference = read_reference(layout.require(layout.reference, made_by="score"))
    scores = score_candidates(candidates.rename(columns={"formula": "composition"}), reference,
                              metastable_cutoff=metastable_cutoff)
    extra = candidates.set_index("id")
    scores["formula"] = scores["id"].map(extra["formula"])
    scores["relax_converged"] = scores["id"].map(extra["converged"]).astype(bool)
    scores["relax_error"] = scores["id"].map(extra["error"]).fillna("")
    scores.to_parquet(layout.scores, index=False)

    stage = layout.stage_dir("score")
    hist = histogram_png(scores["decomposition_energy"], stage / "decomposition_energy.png",
                         title="decomposition energy of relaxed candidates", xlabel="eV/atom",
                         markers={"hull": 0.0, f"metastable ({metastable_cutoff:g})": metastable_cutoff})
    ranked = scores[np.isfinite(scores["decomposition_energy"].astype(float))].sort_values("decomposition_energy")
    top = ranked[TOP_COLUMNS].head(top_k)
    n = len(scores)
    counted = scores["relax_converged"]
    stats = {"n_candidates": n, "n_scored": int(np.isfinite(scores["decomposition_energy"].astype(float)).sum()),
             "n_stable": int((scores["stable"] & counted).sum()), "n_metastable": int((scores["metastable"] & counted).sum()),
             "n_missing_elements": int((scores["missing_elements"] != "").sum()),
             "n_not_converged": int((~counted).sum())}
    key = artifact_key(layout.campaign, "top-candidates")
    create_table_artifact(key=key, table=json.loads(top.to_json(orient="records")),
                          description=f"{layout.campaign}: lowest decomposition energy (eV/atom) first")
    markdown = (f"### Scores of {layout.campaign}\n\n"
                f"* candidates relaxed: {n}, scored: {stats['n_scored']} (missing reference elements: "
                f"{stats['n_missing_elements']}, relaxation not converged: {stats['n_not_converged']})\n"
                f"* stable (on or below the hull, converged): {stats['n_stable']}\n"
                f"* metastable (<= {metastable_cutoff:g} eV/atom): {stats['n_metastable']}\n\n"
                + inline_image(hist, "decomposition energy histogram")
                + "#### Top candidates\n\n" + markdown_table(top.drop(columns=["relax_converged"]).head(10))
                + "\n#### Files\n\n" + file_links({"scores": layout.scores, "reference hull": layout.reference,
                                                   "histogram": hist or ""}))
    create_markdown_artifact(key=artifact_key(layout.campaign, "score"), markdown=markdown,
                             description="score stage summary")
    return {"path": str(layout.scores), **stats, "histogram": str(hist) if hist else None}


@task(name="sun-summary")
def summarize_sun(layout: RunLayout, use_metastable: bool = False) -> dict:
    """S.U.N. counts; uniqueness/novelty come from the evaluate stage's per_structure.parquet when it exists.

    Only candidates whose relaxation converged count as stable (an unconverged energy is not a minimum).
    """
    scores = pd.read_parquet(layout.require(layout.scores, made_by="score"))
    flags = scores.copy()
    flags["stable"] = flags["stable"] & flags["relax_converged"]
    flags["metastable"] = flags["metastable"] & flags["relax_converged"]
    unique = novel = None
    if layout.per_structure_metrics.exists():
        per = pd.read_parquet(layout.per_structure_metrics).drop_duplicates("id").set_index("id")
        if "unique" in per:
            unique = flags["id"].map(per["unique"]).fillna(False).astype(bool)
        if "novel" in per:
            novel = flags["id"].map(per["novel"]).fillna(False).astype(bool)
    summary = {k: float(v) if isinstance(v, float) else v  # numpy floats -> plain JSON numbers
               for k, v in sun_summary(flags, unique=unique, novel=novel, use_metastable=use_metastable).items()}
    path = layout.stage_dir("score") / "sun.json"
    path.write_text(json.dumps(summary, indent=1))
    known = "from the evaluate stage" if summary["uniqueness_known"] else "unknown (evaluate not run yet): counted as all"
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "sun"),
        markdown=(f"### S.U.N. of {layout.campaign}\n\n| | count | rate |\n|---|---|---|\n"
                  + "".join(f"| {k} | {summary['n_' + k]} | {summary[k + '_rate']:.3f} |\n"
                            for k in ("stable", "unique", "novel", "sun"))
                  + f"\nCriterion: {summary['stability_criterion']}; uniqueness/novelty {known}.\n"),
        description="stable, unique and novel candidates")
    return {**summary, "path": str(path)}
