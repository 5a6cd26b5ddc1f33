"""Score stage tasks: the reference hull, candidate scores and the S.U.N. summary, with their artifacts.
The stage's logic (reference plan, offline / MP / file reference on one energy scale, scoring) is dft.scoring."""

from __future__ import annotations

import json

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from dft import scoring
from dft.batch import cached_calculator
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from dft.scoring import reference_cache, score_stats
from tasks.artifacts import (artifact_key, file_links, histogram_png, inline_image, markdown_table,
                             reference_checks_markdown)
from unimat_core.run_layout import RunLayout

TOP_COLUMNS = ["id", "formula", "energy_per_atom", "correction_per_atom", "formation_energy_per_atom", "e_above_hull",
               "decomposition_energy", "stable", "metastable"]  # energies on the hull's scale, correction included
EXCLUDED_COLUMNS = ["id", "formula", "raw_energy_per_atom", "score_error"]


@task(name="plan-reference")
def plan_reference(layout: RunLayout, size: int, seed: int, calculator: str) -> dict:
    """The chemical systems to take from the prototype cache and the dataset ids to relax (small lists); fails fast
    when the candidates were relaxed with another calculator."""
    plan = scoring.plan_reference(layout, size, seed, calculator, get_run_logger().warning)
    n_elements = sum("-" not in s for s in plan["systems"])
    get_run_logger().info("reference plan: %d elements, %d element pairs, %d dataset structures",
                          n_elements, len(plan["systems"]) - n_elements, len(plan["dataset_ids"]))
    return plan


@task(name="reference-systems", retries=1)
def reference_systems(layout: RunLayout, systems: list[str], calculator: CalculatorConfig, relax: RelaxConfig) -> dict:
    """Relax the prototypes of every system not yet in the cache (elements and pairs); returns counts."""
    with cached_calculator(calculator) as built:
        summary = reference_cache(layout, calculator, relax).ensure(systems, built)
    get_run_logger().info("reference systems: %d, %d from the cache, %d prototypes relaxed in %.0f s",
                          summary["n_systems"], summary["n_reused"], summary["n_relaxed"], summary["seconds"])
    return summary


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry a failed reference build (e.g. a dropped MP connection), never a refusal or a bad file: they won't heal."""
    try:
        state.result()
    except (ValueError, FileNotFoundError):  # ScaleMismatch, HullError, a missing file
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


@task(name="build-reference", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_bad_input)
def build_reference(layout: RunLayout, kind: str, path: str | None, systems: list[str], calculator: CalculatorConfig,
                    relax: RelaxConfig) -> dict:
    """Write `score/reference.parquet` (on the hull's scale) and `score/reference.json` (its scales)."""
    info = scoring.write_reference_hull(layout, kind, path, systems, calculator, relax, get_run_logger().warning)
    get_run_logger().info("reference hull: %d entries %s on %s (%s) -> %s", info["n_entries"], info["sources"],
                          info["hull_scale"], info["note"], layout.reference)
    return info


@task(name="score-candidates")
def score_relaxed(layout: RunLayout, calculator: CalculatorConfig, metastable_cutoff: float, top_k: int = 20) -> dict:
    """Formation / decomposition energies and stability flags for every converged candidate -> scores.parquet."""
    scores, info, plan, checks = scoring.score_run(layout, calculator, metastable_cutoff, get_run_logger().warning)
    stats = score_stats(scores)
    hist = histogram_png(scores["decomposition_energy"], layout.decomposition_plot,
                         title="decomposition energy of converged candidates", xlabel="eV/atom",
                         markers={"hull": 0.0, f"metastable ({metastable_cutoff:g})": metastable_cutoff})
    ranked = scores[np.isfinite(scores["decomposition_energy"].astype(float))].sort_values("decomposition_energy")
    top = ranked[TOP_COLUMNS].head(top_k)
    create_table_artifact(key=artifact_key(layout.campaign, "top-candidates"),
                          table=json.loads(top.to_json(orient="records")),
                          description=f"{layout.campaign}: lowest decomposition energy (eV/atom) first, "
                                      f"converged relaxations only, energies on {plan.hull_scale}")
    excluded = scores[scores["score_error"] != ""][EXCLUDED_COLUMNS]
    markdown = (f"### Scores of {layout.campaign}\n\n"
                f"* candidates relaxed: {stats['n_candidates']}, scored: {stats['n_scored']}; excluded: relaxation "
                f"not converged {stats['n_not_converged']}, missing reference elements {stats['n_missing_elements']}, "
                f"other {stats['n_other_excluded']}\n"
                f"* stable (on or below the hull, converged): {stats['n_stable']}\n"
                f"* metastable (<= {metastable_cutoff:g} eV/atom): {stats['n_metastable']}\n"
                f"* energy scale: {plan.hull_scale} ({plan.note})\n"
                f"* reference: {info['n_entries']} entries {info['sources']}\n\n"
                + inline_image(hist, "decomposition energy histogram")
                + "#### Top candidates\n\n" + markdown_table(top.head(10))
                + "\n#### Excluded candidates (not scored, never stable)\n\n" + markdown_table(excluded.head(10))
                + reference_checks_markdown(checks)
                + "\n#### Files\n\n" + file_links({"scores": layout.scores, "reference hull": layout.reference,
                                                   "reference scales": layout.reference_info,
                                                   "histogram": hist or ""}))
    create_markdown_artifact(key=artifact_key(layout.campaign, "score"), markdown=markdown,
                             description="score stage summary")
    return {"path": str(layout.scores), **stats, "energy_scale": str(plan.hull_scale), "scale_note": plan.note,
            "histogram": str(hist) if hist else None}



@task(name="sun-summary")
def summarize_sun(layout: RunLayout, use_metastable: bool = False) -> dict:
    """S.U.N. counts (dft.scoring.sun_of_run) and their markdown artifact."""
    summary = scoring.sun_of_run(layout, use_metastable)
    known = ("from the evaluate stage" if summary["uniqueness_known"]
             else "unknown (evaluate not run yet): counted as all")
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "sun"),
        markdown=(f"### S.U.N. of {layout.campaign}\n\n| | count | rate |\n|---|---|---|\n"
                  + "".join(f"| {k} | {summary['n_' + k]} | {summary[k + '_rate']:.3f} |\n"
                            for k in ("stable", "unique", "novel", "sun"))
                  + f"\nCriterion: {summary['stability_criterion']}, converged relaxations only "
                    f"({summary['n_not_converged']} of {summary['n_candidates']} not converged: never stable); "
                    f"uniqueness/novelty {known}.\n"),
        description="stable, unique and novel candidates")
    return {**summary, "path": str(layout.sun_summary)}
