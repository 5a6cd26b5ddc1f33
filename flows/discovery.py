"""The discovery benchmark flow: does conditional UniMat find the known ground state in fewer relaxations
than random structure search, with the same calculator and the same number of proposals?

Steps (each a task writing parquet under `<results_root>/<campaign>/discovery/`, each resumable):
targets + known structures -> UniMat candidates and random candidates (concurrently) -> relaxation of
known structures and candidates, one mapped task per chunk -> report (tables, markdown, PNG, artifacts).
See dft/discovery.py for the folder layout and the budget and timing rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dft.discovery import discovery_dir
from flows.params import GenerateParams, RelaxParams, RunParams, option
from tasks.discovery import (
    plan_relaxation_task,
    prepare_targets_task,
    random_candidates_task,
    relax_chunk_task,
    report_task,
    unimat_candidates_task,
)


class DiscoveryParams(BaseModel):
    """What to compare. Defaults: 20 perov_5 test compositions unseen in the bundled val split, K = 20.
    How UniMat samples (sampler, steps, guidance, batch size, seed, device) is the generate stage's
    `GenerateParams`; the seed also draws the targets and the random cells."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(default=None, description="model checkpoint (default: "
                                   "<campaign>/train/checkpoints/last.pt)")
    compositions: tuple[str, ...] = Field(default=(), description="comma-separated cell formulas (default: draw "
                                          "--n-compositions from the known structures)")
    n_compositions: int = Field(default=20, ge=1, description="compositions to draw")
    known: str = Field(default="perov_5", description="perov_5 (its test split) or a structure-table parquet of known "
                       "structures")
    unseen_only: bool = option(None, "draw only compositions absent from the other bundled splits (the model's data)",
                               default=True)
    relaxations_per_composition: int = option("--k", "candidates (relaxations) per composition and method", default=20,
                                              ge=1)
    min_distance_factor: float = Field(default=0.7, gt=0, description="random search: d_ij >= factor * (r_i + r_j)")
    packing_fraction: float = Field(default=0.45, gt=0, description="random search: atom volume / cell volume")
    tolerance: float = Field(default=0.010, gt=0, description="eV/atom above the known energy that counts as reached")
    # a time- or step-limited relaxation of a collapsed cell can report an energy eV/atom below the true ground
    # state (a calculator artefact, not a discovery)
    converged_only: bool = option("--all-energies", "score converged relaxations only (off: also score unconverged "
                                  "relaxations)", default=True)

    @field_validator("compositions")
    @classmethod
    def _formulas(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from dft.discovery import compact_formula

        return tuple(compact_formula(f) for f in value)

    def random_config(self) -> dict:
        from unimat_core.random_structures import RandomStructureConfig

        return RandomStructureConfig(packing_fraction=self.packing_fraction,
                                     min_distance_factor=self.min_distance_factor).as_dict()


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
