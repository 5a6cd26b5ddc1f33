"""The discovery benchmark flow: does conditional UniMat find the known ground state in fewer relaxations
than random structure search, with the same calculator and the same number of proposals?

The benchmark is the plain-Python package dft/discovery_benchmark (its folder layout, budget and timing
rules are documented there); this flow only composes its tasks: targets + known structures (+ the element's
reference phases for `reference="elemental"`, e.g. carbon_24) -> UniMat and random candidates (concurrently)
-> relaxation chunks (mapped, the one relaxation engine) -> report with the paper's AIRSS metrics.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from dft.discovery_benchmark import DiscoveryParams, benchmark_settings, relaxation_sets
from flows.params import GenerateParams, RelaxParams, RunParams
from tasks.discovery import (
    plan_relaxation_task,
    prepare_targets_task,
    random_candidates_task,
    relax_chunk_task,
    report_task,
    unimat_candidates_task,
)

__all__ = ["DiscoveryParams", "discovery_benchmark"]

# Two chunks at a time locally: one per core of a small machine (relaxations use one torch thread each).
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=2)


@flow(name="discovery-benchmark", log_prints=True, task_runner=LOCAL_RUNNER)
def discovery_benchmark(run: RunParams = RunParams(), discovery: DiscoveryParams = DiscoveryParams(),
                        relax: RelaxParams = RelaxParams(), generate: GenerateParams = GenerateParams()) -> dict:
    """`generate` holds how UniMat samples (its seed also draws the targets and the random cells)."""
    from unimat_core.model.pretrained import is_pretrained, resolve

    layout = run.layout()
    if discovery.checkpoint and is_pretrained(discovery.checkpoint):
        resolve(discovery.checkpoint)  # a shipped model: recorded by name, so its settings.json reads as such
        checkpoint = discovery.checkpoint
    else:
        checkpoint = Path(discovery.checkpoint).resolve() if discovery.checkpoint else layout.train_checkpoint
        layout.require(checkpoint, made_by="train")
    folder, k, seed = str(layout.discovery), discovery.relaxations_per_composition, generate.seed
    settings = benchmark_settings(str(checkpoint), discovery, generate, relax.calculator_config(), relax.relax_config())
    targets = prepare_targets_task(folder, settings, discovery.known, list(discovery.compositions),
                                   discovery.n_compositions, seed, discovery.unseen_only, discovery.reference)
    compositions = targets["compositions"]
    unimat = unimat_candidates_task.submit(str(checkpoint), compositions, k, generate, folder, discovery.oversample)
    searched = random_candidates_task.submit(compositions, k, seed, discovery.random_config(), folder)
    generated = {"unimat": unimat.result(), "random": searched.result()}
    chunks = plan_relaxation_task(folder, relax.chunk_size, relaxation_sets(discovery.reference))
    relaxed = relax_chunk_task.map(chunks, unmapped(relax.calculator_config()), unmapped(relax)).result()
    result = report_task(folder, run.campaign, k, discovery.tolerance, discovery.converged_only, discovery.reference)
    done = {name: sum(c["n_relaxed"] for c in relaxed if c["set"] == name)
            for name in relaxation_sets(discovery.reference)}
    return {"targets": targets, "candidates": generated, "relaxed_now": done, "n_chunks": len(chunks), **result}
