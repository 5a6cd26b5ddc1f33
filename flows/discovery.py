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
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dft.discovery import discovery_dir
from flows.params import RelaxParams, RunParams
from unimat_core.model.config import Sampler
from tasks.discovery import (
    plan_relaxation_task,
    prepare_targets_task,
    random_candidates_task,
    relax_chunk_task,
    report_task,
    unimat_candidates_task,
)


class DiscoveryParams(BaseModel):
    """What to compare. Defaults: 20 perov_5 test compositions unseen in the bundled val split, K = 20."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None  # default: <campaign>/train/checkpoints/last.pt
    compositions: tuple[str, ...] = ()  # full cell formulas; empty: draw n_compositions from `known`
    n_compositions: int = Field(default=20, ge=1)
    known: str = "perov_5"  # bundled dataset (its test split) or a structure-table parquet of known structures
    unseen_only: bool = True  # draw only compositions absent from the other bundled splits (the model's data)
    relaxations_per_composition: int = Field(default=20, ge=1)  # K proposals per composition and method
    sampler: Sampler = "ddim"
    steps: int = Field(default=50, ge=1)
    guidance: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=100, ge=1)
    use_ema: bool = True
    device: str = "auto"
    min_distance_factor: float = Field(default=0.7, gt=0)  # random search: d_ij >= factor * (r_i + r_j)
    packing_fraction: float = Field(default=0.45, gt=0)
    tolerance: float = Field(default=0.010, gt=0)  # eV/atom above the known energy that counts as reached
    # score only converged relaxations: a time- or step-limited relaxation of a collapsed cell can report an energy
    # eV/atom below the true ground state (a calculator artefact, not a discovery)
    converged_only: bool = True
    seed: int = 0

    @field_validator("compositions")
    @classmethod
    def _formulas(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from dft.discovery import compact_formula

        return tuple(compact_formula(f) for f in value)

    def generation(self) -> dict:
        """GenerateConfig fields other than checkpoint, out_dir and the targets."""
        return {"batch_size": self.batch_size, "sampler": self.sampler, "steps": self.steps, "guidance": self.guidance,
                "seed": self.seed, "use_ema": self.use_ema, "device": self.device}

    def random_config(self) -> dict:
        from unimat_core.random_structures import RandomStructureConfig

        return RandomStructureConfig(packing_fraction=self.packing_fraction,
                                     min_distance_factor=self.min_distance_factor).as_dict()


# Two chunks at a time locally: one per core of a small machine (relaxations use one torch thread each).
LOCAL_RUNNER = ThreadPoolTaskRunner(max_workers=2)


@flow(name="discovery-benchmark", log_prints=True, task_runner=LOCAL_RUNNER)
def discovery_benchmark(run: RunParams = RunParams(), discovery: DiscoveryParams = DiscoveryParams(),
                        relax: RelaxParams = RelaxParams()) -> dict:
    layout = run.layout()
    checkpoint = Path(discovery.checkpoint).resolve() if discovery.checkpoint else layout.train_checkpoint
    layout.require(checkpoint, made_by="train")
    folder = discovery_dir(layout)
    k = discovery.relaxations_per_composition
    settings = {"checkpoint": str(checkpoint), "known": discovery.known, "compositions": list(discovery.compositions),
                "n_compositions": discovery.n_compositions, "unseen_only": discovery.unseen_only, "k": k,
                "seed": discovery.seed, "generation": discovery.generation(), "random": discovery.random_config(),
                "calculator": relax.calculator_config(), "relax": relax.relax_config()}
    targets = prepare_targets_task(str(folder), settings, discovery.known, list(discovery.compositions),
                                   discovery.n_compositions, discovery.seed, discovery.unseen_only)
    compositions = targets["compositions"]
    unimat = unimat_candidates_task.submit(str(checkpoint), compositions, k, discovery.generation(), str(folder))
    searched = random_candidates_task.submit(compositions, k, discovery.seed, discovery.random_config(), str(folder))
    generated = {"unimat": unimat.result(), "random": searched.result()}
    chunks = plan_relaxation_task(str(folder), relax.chunk_size)
    relaxed = relax_chunk_task.map(chunks, unmapped(relax.calculator_config()), unmapped(relax.relax_config())).result()
    result = report_task(str(folder), run.campaign, k, discovery.tolerance, discovery.converged_only)
    done = {name: sum(c["n_relaxed"] for c in relaxed if c["set"] == name) for name in ("known", "unimat", "random")}
    return {"targets": targets, "candidates": generated, "relaxed_now": done, "n_chunks": len(chunks), **result}
