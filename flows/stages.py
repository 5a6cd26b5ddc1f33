"""One Prefect flow per stage; each runs alone on an existing run folder.

Chunked stages (generate, relax, the score stage's reference relaxations) fan out with `.map()` on the
flow's task runner: threads by default, `relax_flow.with_options(task_runner=DaskTaskRunner(...))` on
a Dask cluster. Mapped tasks only get paths, ids and the stage's typed config.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import (EvaluateParams, GenerateParams, RelaxParams, RunParams, ScoreParams, TensorizeParams, TrainParams,
                          stage_settings)
from flows.preflight import check_score_calculator
from tasks.evaluate import evaluate_csp_task, evaluate_generated
from tasks.evaluate_inputs import csp_inputs, evaluate_inputs
from tasks.fetch import fetch_structures
from tasks.generate import generate_batch, plan_generation, start_progress
from tasks.relax import plan_relax, relax_chunk, relax_report
from dft.scoring import reference_relax_dir
from tasks.score import (build_reference, plan_reference, reference_systems, score_relaxed,
                         summarize_sun)
from tasks.tensorize import tensorize_structures
from tasks.train import train_model
from unimat_core.datasets.source import DatasetSource
from unimat_core.model.pretrained import resolve
from unimat_core.parts import set_aside_damaged
from unimat_core.provenance import (StageRecord, checkpoint_identity, reconcile, software_versions, update_about,
                                    upstream_fingerprint)
from unimat_core.run_layout import RunLayout

# Two chunks at a time locally: one per core of a small machine (relaxations use one torch thread each).
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=2)


def begin_stage(run: RunParams, stage: str, settings: dict, inputs: dict[str, str], about: dict | None = None) -> None:
    """Record what this run of `stage` is made from; outputs made from other inputs (or, with --overwrite,
    other settings) are set aside first, and other settings alone stop the run (unimat_core.provenance)."""
    about = {**(about or {}), "software": software_versions()}
    message = reconcile(run.layout(), StageRecord(stage, settings, inputs, about), overwrite=stage in run.overwrite)
    if message:
        get_run_logger().warning(message)


def upstream(layout: RunLayout, *stages: str) -> dict[str, str]:
    """Input fingerprints naming the upstream stages' outputs by their records."""
    return {stage: upstream_fingerprint(layout, stage) for stage in stages}


def set_aside_damaged_parts(layout: RunLayout, stage: str) -> None:
    """Move unreadable part files of `stage` out of the way; its command redoes their rows."""
    for message in set_aside_damaged(layout.stage_dir(stage)):
        get_run_logger().warning("%s; `unimat %s --campaign %s` redoes its rows", message, stage, layout.campaign)


@flow(name="fetch", log_prints=True)
def fetch_flow(run: RunParams = RunParams(), source: DatasetSource = DatasetSource()) -> dict:
    begin_stage(run, "fetch", source.settings(), source.input_hashes())
    return fetch_structures(source, run.layout())


@flow(name="tensorize", log_prints=True)
def tensorize_flow(run: RunParams = RunParams(), tensorize: TensorizeParams = TensorizeParams()) -> dict:
    layout = run.layout()
    layout.require(layout.structures, made_by="fetch")
    begin_stage(run, "tensorize", tensorize.settings(), upstream(layout, "fetch"))
    return tensorize_structures(layout, tensorize)


@flow(name="train", log_prints=True)
def train_flow(run: RunParams = RunParams(), train: TrainParams = TrainParams()) -> dict:
    layout = run.layout()
    layout.require(layout.tensors, made_by="tensorize")
    begin_stage(run, "train", train.settings(), upstream(layout, "tensorize"))
    summary = train_model(layout, train)
    update_about(layout, "train", step=summary["step"], stopped_by=summary["stopped_by"])
    return summary


@flow(name="generate", log_prints=True)
def generate_flow(run: RunParams = RunParams(), generate: GenerateParams = GenerateParams()) -> dict:
    """Fan out one task per batch on the flow's task runner; parts land as batches finish."""
    layout = run.layout()
    checkpoint = generate.model or layout.require(layout.train_checkpoint, made_by="train")
    model, step = checkpoint_identity(resolve(checkpoint))
    config = generate.for_run(str(checkpoint), str(layout.generated))  # unset sampling settings: the model's recommendation
    begin_stage(run, "generate", config.settings(), {"checkpoint": model}, about={"checkpoint_step": step})
    batches = plan_generation(config)
    progress = start_progress(run.campaign, len(batches))
    futures = generate_batch.map(unmapped(config), list(range(len(batches))), batches, unmapped(progress),
                                 unmapped(len(batches)))
    parts = [f.result() for f in futures]
    return {"out_dir": config.out_dir, "n_parts": len(parts), "n_generated": sum(p["n"] for p in parts),
            "n_valid": sum(p["n_valid"] for p in parts), "n_reused_parts": sum(p["skipped"] for p in parts)}


@flow(name="relax", log_prints=True, task_runner=LOCAL_RUNNER)
def relax_flow(run: RunParams = RunParams(), relax: RelaxParams = RelaxParams()) -> dict:
    """Relax every validly decoded generated structure not yet relaxed, one part file per chunk."""
    layout = run.layout()
    layout.require_parts(layout.generated, made_by="generate")
    begin_stage(run, "relax", relax.settings(), upstream(layout, "generate"))
    set_aside_damaged_parts(layout, "generate")
    set_aside_damaged_parts(layout, "relax")
    layout.require_parts(layout.generated, made_by="generate")
    plan = plan_relax(str(layout.generated), str(layout.relaxed), relax.chunk_size)
    futures = relax_chunk.map(unmapped(str(layout.generated)), plan["chunks"], plan["parts"],
                              unmapped(relax.calculator_config()), unmapped(relax), unmapped(relax.max_sites))
    chunks = futures.result()
    return {**relax_report(layout, plan["n_done_before"], chunks), "n_chunks": len(chunks)}


@flow(name="score", log_prints=True, task_runner=LOCAL_RUNNER)
def score_flow(run: RunParams = RunParams(), relax: RelaxParams = RelaxParams(), score: ScoreParams = ScoreParams()
               ) -> dict:
    """Build (or reuse) the reference hull, score the relaxed candidates, summarise S.U.N."""
    layout = run.layout()
    if layout.relaxed.is_dir() and not any(layout.relaxed.glob("part-*.parquet")):
        print(f"score: the relax stage of {run.campaign!r} had no valid generated structure; nothing to score")
        return {"skipped": "no relaxed candidates"}
    layout.require_parts(layout.relaxed, made_by="relax")
    check_score_calculator(layout, relax)
    begin_stage(run, "score", stage_settings("score", {"score": score, "relax": relax}), upstream(layout, "relax", "fetch"))
    set_aside_damaged_parts(layout, "relax")
    calculator, relax_config = relax.calculator_config(), relax.relax_config()
    reference: dict = {"kind": score.kind}
    systems: list[str] = []
    if score.kind == "offline":
        plan = plan_reference(layout, score.reference_size, score.seed, relax.calculator)
        systems = plan["systems"]
        groups = [systems[i:i + score.elements_per_task] for i in range(0, len(systems), score.elements_per_task)]
        cached = reference_systems.map(unmapped(layout), groups, unmapped(calculator), unmapped(relax_config))
        pieces = str(reference_relax_dir(layout, calculator, relax_config))
        dataset_plan = plan_relax(str(layout.structures), pieces, relax.chunk_size, plan["dataset_ids"]) \
            if plan["dataset_ids"] else {"chunks": [], "parts": []}
        dataset = relax_chunk.map(unmapped(str(layout.structures)), dataset_plan["chunks"], dataset_plan["parts"],
                                  unmapped(calculator), unmapped(relax_config))
        systems_done = cached.result()
        reference.update(n_dataset_relaxed=sum(c["n"] for c in dataset.result() if not c["skipped"]),
                         n_prototypes_relaxed=sum(c["n_relaxed"] for c in systems_done),
                         n_systems_from_cache=sum(c["n_reused"] for c in systems_done),
                         prototype_seconds=round(sum(c["seconds"] for c in systems_done), 1))
    reference.update(build_reference(layout, score.kind, score.reference if score.kind == "file" else None,
                                     systems, calculator, relax_config))
    scores = score_relaxed(layout, calculator, score.metastable_cutoff)
    sun = summarize_sun(layout, score.use_metastable)
    return {"reference": reference, "scores": scores, "sun": sun}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(run: RunParams = RunParams(), evaluate: EvaluateParams = EvaluateParams()) -> dict:
    """Benchmark metrics of the generated structures vs the fetched held-out split (novelty vs every known crystal)."""
    layout = run.layout()
    if evaluate.task == "csp":
        inputs = csp_inputs(layout)
        return evaluate_csp_task(inputs["checkpoint"], inputs["structures"], inputs["reference_split"],
                                 evaluate.csp_config(), str(layout.csp_dir(evaluate.k)),
                                 evaluate.dataset or inputs["dataset"])
    set_aside_damaged_parts(layout, "generate")
    inputs = evaluate_inputs(layout)
    begin_stage(run, "evaluate", evaluate.settings(), upstream(layout, "generate", "fetch"))
    config = evaluate.metrics_config(inputs["dataset"], run.results_root)
    return evaluate_generated(inputs["generated_dir"], inputs["structures"], inputs["known"], config,
                              str(layout.stage_dir("evaluate")), reference_split=inputs["reference_split"],
                              known_bundled=inputs["known_bundled"])
