"""The campaign's closing artifact: per-stage timings, headline numbers and links to every output."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.artifacts import artifact_key, file_links, inline_image, markdown_table
from unimat_core.run_layout import RunLayout


def _headline(stage: str, result: dict) -> str:
    pick = {
        "fetch": ("n_structures", "reused"), "tensorize": ("n_encoded", "reused"),
        "train": ("step", "last_loss", "stopped_by"), "generate": ("n_generated", "n_valid"),
        "relax": ("n_relaxed", "n_converged", "n_failed"), "score": ("n_scored", "n_stable", "n_metastable"),
        "evaluate": ("n_valid", "validity", "cov_recall", "cov_precision", "uniqueness", "novelty"),
        "finetune": ("step", "n_finds", "n_as_sample", "last_loss", "skipped"),
        "discoveries": ("n_scored", "n_new", "n_new_stable", "n_total"),
    }[stage]
    if stage == "score":
        result = result.get("scores", result)
    return ", ".join(f"{k}={result[k]:.3g}" if isinstance(result[k], float) else f"{k}={result[k]}"
                     for k in pick if k in result)


def _discoveries(layout: RunLayout, top: int = 10) -> str:
    """The cumulative finds plot and the lowest-energy rows of the discovery table, as markdown."""
    import pandas as pd

    table = pd.read_parquet(layout.discoveries).sort_values("decomposition_energy").head(top)
    columns = ["id", "round", "formula", "kind", "e_above_hull", "decomposition_energy", "stable"]
    return (inline_image(layout.discoveries_plot if layout.discoveries_plot.exists() else None, "cumulative finds")
            + "#### Discoveries (lowest decomposition energy first)\n\n" + markdown_table(table[columns]))


@task(name="campaign-summary")
def publish_campaign_summary(layout: RunLayout, results: dict) -> str:
    """Markdown artifact of the whole campaign; returns its key."""
    rows = "".join(f"| {stage} | {seconds:g} | {_headline(stage, results.get(stage) or {})} |\n"
                   for stage, seconds in results["seconds"].items())
    sun = results.get("sun") or (results.get("score") or {}).get("sun")
    sun_text = (f"\n**S.U.N.**: {sun['n_sun']} of {sun['n_candidates']} candidates ({sun['sun_rate']:.1%}); stable "
                f"{sun['n_stable']}, unique {sun['n_unique']}, novel {sun['n_novel']} "
                f"({'uniqueness/novelty from evaluate' if sun['uniqueness_known'] else 'uniqueness/novelty not known'}).\n"
                if sun else "")
    files = file_links({
        "structures": layout.structures, "tensors": layout.tensors, "checkpoint": layout.train_checkpoint,
        "training metrics": layout.train_metrics, "loss curve": layout.loss_plot,
        "generated parts": layout.generated, "relaxed parts": layout.relaxed, "reference hull": layout.reference,
        "scores": layout.scores, "S.U.N.": layout.sun_summary,
        "decomposition-energy histogram": layout.decomposition_plot,
        "metrics": layout.stage_dir("evaluate"),
    })
    if layout.round is not None:
        files += file_links({"round plan": layout.round_plan, "discoveries (every round)": layout.discoveries,
                             "rounds": layout.round_stats, "cumulative finds plot": layout.discoveries_plot})
    found = results.get("discoveries")
    found_text = (f"\n**New this round**: {found['n_new']} crystals ({found['n_new_stable']} stable) of "
                  f"{found['n_scored']} scored; the discovery table holds {found['n_total']} (artifact "
                  f"`{artifact_key(layout.campaign, 'discoveries')}`).\n\n" + _discoveries(layout) if found else "")
    key = artifact_key(layout.campaign, "campaign")
    create_markdown_artifact(
        key=key, description="discovery campaign summary",
        markdown=(f"## Campaign {layout.label}\n\nRun folder: `{layout.stage_home}`\n\n"
                  f"| stage | seconds | result |\n|---|---|---|\n{rows}{sun_text}{found_text}\n### Files\n\n{files}"))
    return key
