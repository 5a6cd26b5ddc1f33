"""Tasks of a campaign round: its target plan, the fine-tune on earlier finds, the discovery table and its artifact."""

from __future__ import annotations

import json

import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from dft import discoveries
from tasks.artifacts import artifact_key, file_links, inline_image, markdown_table, rounds_png, table_records
from tasks.generate import cached_model
from unimat_core import atomic
from unimat_core.model.config import GenerateConfig
from unimat_core.model.generation import CompositionError, composition_counts, prior_compositions
from unimat_core.representation import UniMatSpec
from unimat_core.rounds import RoundPlan, TargetPolicy, plan_round
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures


def _fits(spec: UniMatSpec):
    def why(formula: str) -> str | None:
        try:
            composition_counts(formula, spec)
        except CompositionError as exc:
            return str(exc)
        return None
    return why


@task(name="plan-round")
def plan_round_targets(layout: RunLayout, policy: dict, seed: int, prior_checkpoint: str) -> dict:
    """The round's targets (`round-NNNN/plan.json`), written once: a resumed round reads them back. Exploration
    compositions come from the campaign model's composition prior (as composition-first unconditional sampling)."""
    if layout.round_plan.exists():
        return json.loads(layout.round_plan.read_text())
    loaded = cached_model(GenerateConfig(checkpoint=prior_checkpoint, use_ema=True, device="cpu"))
    table = discoveries.read_discoveries(layout)
    earlier = table[(table["round"] < layout.round) & table["e_above_hull"].notna()]
    known = read_structures(layout.structures, columns=["formula"])["formula"].tolist()
    plan = plan_round(TargetPolicy(**policy), layout.round, seed,
                      finds=list(zip(earlier["formula"], earlier["e_above_hull"].astype(float))),
                      known_formulas=known + earlier["formula"].tolist(), fits=_fits(loaded.spec))
    free = [i for i, t in enumerate(plan.targets) if t is None]
    if free:
        generator = torch.Generator().manual_seed(seed)
        drawn = prior_compositions(loaded, len(free), generator) if loaded.prior is not None else \
            [known[i] for i in torch.randint(len(known), (len(free),), generator=generator).tolist()]
        for i, formula in zip(free, drawn):
            plan.targets[i] = formula
    atomic.write_text(layout.round_plan, json.dumps(plan.as_dict(), indent=1))
    get_run_logger().info("round %d plan: %s samples (%s); %d substitutions the model cannot sample left out",
                          layout.round, len(plan.targets), plan.shares, len(plan.skipped))
    return plan.as_dict()


@task(name="finetune-data")
def finetune_data(layout: RunLayout, cutoff: float, training_split: str | None, seed: int, checkpoint: str,
                  max_loss_ratio: float) -> dict:
    """Tensorize earlier rounds' low-energy finds, each as relaxed or as the sample it came from (whichever the
    model can learn from), plus as many replayed training crystals, with the campaign's spec."""
    from unimat_core.tensor_store import read_spec, tensorize_frame

    frame, counts = discoveries.finetune_frame(layout, cutoff, training_split, seed, checkpoint, max_loss_ratio)
    if frame.empty:
        return counts
    spec = read_spec(layout.tensors)
    if spec is None:
        raise FileNotFoundError(f"no tensor spec in {layout.tensors}: run the tensorize stage first")
    summary = tensorize_frame(frame, layout.finetune_tensors, spec=spec)
    get_run_logger().info("round %d fine-tune data: %s", layout.round, counts)
    return {**counts, "n_rows": len(frame), "n_encoded": summary.as_dict().get("n_encoded"),
            "dataset": str(layout.finetune_tensors)}


@task(name="update-discoveries")
def update_discoveries(layout: RunLayout, known_tables: list[str], n_generated: int, use_metastable: bool) -> dict:
    """Add the round's new crystals to discoveries.parquet, its counts to rounds.parquet; publish the table and the
    cumulative-finds plot as an artifact."""
    plan = json.loads(layout.round_plan.read_text()) if layout.round_plan.exists() else {}
    candidates = discoveries.round_candidates(layout, _kind_of_ids(layout, plan))
    merged = discoveries.merge_round(layout, candidates, known_tables)
    row = discoveries.round_stats(layout, merged, n_generated, use_metastable)
    get_run_logger().info("round %d: %d scored, %d new (%d stable); duplicates %s; discovery table %d rows",
                          layout.round, merged["n_scored"], merged["n_new"], merged["n_new_stable"],
                          merged["duplicates"], merged["n_total"])
    publish_discoveries(layout)
    return {**merged, **row, "path": str(layout.discoveries)}


def _kind_of_ids(layout: RunLayout, plan: dict) -> dict[str, str]:
    """Generated id -> user / explore / exploit: ids are gen-<batch>-<index>, the plan's targets in order."""
    if not plan:
        return {}
    frames = [pd.read_parquet(p, columns=["id", "batch"]) for p in sorted(layout.generated.glob("part-*.parquet"))]
    ids = pd.concat(frames).sort_values(["batch", "id"])["id"].tolist() if frames else []
    return dict(zip(ids, plan["kinds"]))


def publish_discoveries(layout: RunLayout, top: int = 20) -> str:
    """The campaign's discovery artifact: rounds, the cumulative plot, the lowest-energy new crystals."""
    table = discoveries.read_discoveries(layout)
    rounds = pd.read_parquet(layout.round_stats) if layout.round_stats.exists() else pd.DataFrame()
    png = rounds_png(rounds, layout.discoveries_plot)
    shown = table.sort_values("decomposition_energy").drop(columns=["structure"]).head(top)
    key = artifact_key(layout.campaign, "discoveries")
    create_table_artifact(key=artifact_key(layout.campaign, "discovery-table"), table=table_records(shown),
                          description=f"{layout.campaign}: new crystals of every round, lowest decomposition energy "
                                      "first")
    create_markdown_artifact(
        key=key, description="discoveries of every round",
        markdown=(f"## Discoveries of {layout.campaign}\n\n{len(table)} new crystals (unique, novel against the "
                  f"dataset and earlier rounds) in {len(rounds)} rounds.\n\n" + inline_image(png, "cumulative finds")
                  + "### Rounds\n\n" + markdown_table(rounds) + "\n### Lowest-energy finds\n\n"
                  + markdown_table(shown[["id", "round", "formula", "kind", "e_above_hull", "decomposition_energy",
                                          "stable"]])
                  + "\n### Files\n\n" + file_links({"discoveries": layout.discoveries, "rounds": layout.round_stats,
                                                   "plot": png or ""})))
    return key
