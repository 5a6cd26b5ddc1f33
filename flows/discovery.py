"""The discovery benchmark flow: does conditional UniMat find the known ground state in fewer relaxations
than random structure search, with the same calculator and the same number of proposals?

Steps (each a task writing parquet under `<results_root>/<campaign>/discovery/`, each resumable):
targets + known structures -> UniMat candidates and random candidates (concurrently) -> relaxation of
known structures and candidates, one mapped task per chunk -> report (tables, markdown, PNG, artifacts).
See dft/discovery.py for the folder layout and the budget and timing rules.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from dft.discovery import DiscoveryParams, discovery_dir
from flows.params import GenerateParams, RelaxParams, RunParams
from tasks.discovery import (
    plan_relaxation_task,
    prepare_targets_task,
    random_candidates_task,
    relax_chunk_task,
    report_task,
    unimat_candidates_task,
)


def generation(generate: GenerateParams) -> dict:
    """GenerateConfig fields of the benchmark's sampling (the targets come from the benchmark)."""
    return {k: getattr(generate, k) for k in ("batch_size", "sampler", "steps", "guidance", "seed", "use_ema", "device")}


# Two chunks at a time locally: one per core of a small machine (relaxations use one torch thread each).
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=2)


@flow(name="discovery-benchmark", log_prints=True, task_runner=LOCAL_RUNNER)
def discovery_benchmark(run: RunParams = RunParams(), discovery: DiscoveryParams = DiscoveryParams(),
                        relax: RelaxParams = RelaxParams(), generate: GenerateParams = GenerateParams()) -> dict:
    layout = run.layout()
    checkpoint = Path(discovery.checkpoint).resolve() if discovery.checkpoint else layout.train_checkpoint
    layout.require(checkpoint, made_by="train")
    folder = discovery_dir(layout)
    k = discovery.relaxations_per_composition
    settings = {"checkpoint": str(checkpoint), "known": discovery.known, "compositions": list(discovery.compositions),
                "n_compositions": discovery.n_compositions, "unseen_only": discovery.unseen_only, "k": k,
                "seed": generate.seed, "generation": generation(generate), "random": discovery.random_config(),
                "calculator": relax.calculator_config().as_dict(), "relax": relax.relax_config().model_dump()}
    targets = prepare_targets_task(str(folder), settings, discovery.known, list(discovery.compositions),
                                   discovery.n_compositions, generate.seed, discovery.unseen_only)
    compositions = targets["compositions"]
    unimat = unimat_candidates_task.submit(str(checkpoint), compositions, k, generation(generate), str(folder))
    searched = random_candidates_task.submit(compositions, k, generate.seed, discovery.random_config(), str(folder))
    generated = {"unimat": unimat.result(), "random": searched.result()}
    chunks = plan_relaxation_task(str(folder), relax.chunk_size)
    relaxed = relax_chunk_task.map(chunks, unmapped(relax.calculator_config()), unmapped(relax.relax_config())).result()
    result = report_task(str(folder), run.campaign, k, discovery.tolerance, discovery.converged_only)
    done = {name: sum(c["n_relaxed"] for c in relaxed if c["set"] == name) for name in ("known", "unimat", "random")}
    return {"targets": targets, "candidates": generated, "relaxed_now": done, "n_chunks": len(chunks), **result}
