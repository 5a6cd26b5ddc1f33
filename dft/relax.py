"""Relax one structure (positions + cell) and record what happened, never raising for bad input.

In-process calculators run through quacc's `Runner.run_opt` (FIRE or BFGS on a
`FrechetCellFilter`), inside a throw-away results folder set with quacc's scoped
`change_settings` context (no process-global switch). The per-structure time limit is checked
by quacc's `stop_condition` after every optimizer step, so a run is stopped at the first step
boundary past the limit (a single step that hangs is not interrupted in-process; GPAW runs in a
subprocess that is killed instead). Any exception inside the calculator is recorded as `error`.

This is the one-by-one path (EMT, GPAW, VASP, QE, and the reference for the batched engine);
`dft.engine.relax_structures` picks it or the batched engine (`dft.batched`) for a list of structures.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
from ase import Atoms
from ase.optimize import BFGS, FIRE
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from dft.calculators import OUT_OF_PROCESS, BuiltCalculator, CalculatorConfig, build_calculator, out_of_process_backend
from dft.errors import short_error

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS}


class RelaxConfig(BaseModel):
    """Convergence and budget of one relaxation: every caller's one declaration of these settings (the `unimat`
    options, the relax stage's and the score stage's parameters, the reference cache key are derived from it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fmax: float = Field(default=0.05, gt=0, description="force threshold, eV/A (and the cell filter's stress-derived "
                        "forces)")
    max_steps: int = Field(default=300, ge=0, description="optimizer step limit per structure (0: a single point)",
                           json_schema_extra={"option": "--relax-steps"})
    optimizer: Literal["FIRE", "BFGS"] = Field(default="FIRE", description="optimizer (BFGS needs about half FIRE's "
                                               "steps on small cells)")
    relax_cell: bool = Field(default=True, description="relax the cell with the positions",
                             json_schema_extra={"option": "--no-relax-cell"})
    time_limit_s: float = Field(default=120.0, ge=0, description="seconds per structure; in a batch, its share of "
                                "each batched step's time", json_schema_extra={"option": "--time-limit"})
    engine: Literal["auto", "batched", "ase"] = Field(
        default="auto", description="auto: batched for ML potentials (CHGNet, SevenNet), one by one through ASE "
        "otherwise; batched also drives EMT through the batched engine; ase: one by one",
        json_schema_extra={"option": "--relax-engine"})
    batch_atoms: int = Field(default=256, ge=1, description="most atoms in one batched model call (256 keeps a CPU "
                             "near its best per-atom cost and dense carbon under ~3 GB with CHGNet; raise it on a GPU)")


@dataclass
class RelaxResult:
    """One relaxation. `structure` is the relaxed one, or the input when the run failed."""

    structure: Structure
    energy: float = float("nan")
    energy_per_atom: float = float("nan")
    max_force: float = float("nan")
    steps: int = 0
    converged: bool = False
    wall_time_s: float = 0.0
    rmsd: float = float("nan")
    calculator: str = ""
    calculator_version: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def properties(self) -> dict:
        """Every field except the structure: the extra parquet columns of a relaxed row."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "structure"}

    def as_dict(self) -> dict:
        return {"structure": self.structure.as_dict(), **self.properties()}

    @classmethod
    def from_dict(cls, data: dict) -> RelaxResult:
        return cls(**{**data, "structure": Structure.from_dict(data["structure"])})


def displacement_rmsd(initial: Structure, final: Structure) -> float:
    """RMS site displacement (A), minimum image in fractional space, rigid translation removed."""
    if len(initial) != len(final):
        return float("nan")
    dfrac = final.frac_coords - initial.frac_coords
    dfrac -= np.round(dfrac)
    dcart = dfrac @ final.lattice.matrix
    dcart -= dcart.mean(axis=0)
    return float(np.sqrt((dcart**2).sum(axis=1).mean()))


def record_outcome(result: RelaxResult, initial: Structure, relaxed: Structure, energy: float, max_force: float,
                   steps: int, timed_out: bool, config: RelaxConfig) -> RelaxResult:
    """Fill a finished relaxation's fields and verdict (converged, or why not); both engines use it."""
    result.structure = relaxed
    result.energy, result.energy_per_atom = energy, energy / len(relaxed)
    result.max_force, result.steps = max_force, steps
    # a single point (max_steps 0) has nothing to converge: its energy is the answer
    result.converged = bool(config.max_steps == 0 or max_force <= config.fmax) and not timed_out
    result.rmsd = displacement_rmsd(initial, relaxed)
    if timed_out:
        result.error = f"time limit: stopped after {steps} steps, over {config.time_limit_s:g} s"
    elif not result.converged:
        result.error = f"not converged: max force {max_force:.3g} eV/A > {config.fmax:g} after {steps} steps"
    if not np.isfinite(energy):
        result.error = f"non-finite energy {energy}"
    return result


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's CPU intra-op threads for the duration, then restore them."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def relax_atoms(structure: Structure, built: BuiltCalculator, config: RelaxConfig) -> RelaxResult:
    """Relax with an in-process ASE calculator through quacc's Runner; failures become `error`."""
    from quacc import change_settings
    from quacc.runners.ase import Runner
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    result = RelaxResult(structure=structure, calculator=built.name, calculator_version=built.version)
    timed_out = False

    def over_time(_dyn) -> bool:
        nonlocal timed_out
        timed_out = time.perf_counter() - start > config.time_limit_s
        return timed_out

    try:
        atoms: Atoms = AseAtomsAdaptor.get_atoms(structure)
        # BLAS threads on the cell filter's 3x3/6x6 matrix functions only contend (measured 20x
        # slower on a busy 2-core machine); torch keeps its own intra-op threads.
        with tempfile.TemporaryDirectory(prefix="unimat-relax-") as work, change_settings(
            {"RESULTS_DIR": work, "SCRATCH_DIR": None, "GZIP_FILES": False, "CREATE_UNIQUE_DIR": False}
        ), threadpool_limits(limits=1, user_api="blas"), torch_threads(built.cpu_threads):
            runner = Runner(atoms, built.calculator)
            dyn = runner.run_opt(
                relax_cell=config.relax_cell, fmax=config.fmax, max_steps=config.max_steps,
                optimizer=OPTIMIZERS[config.optimizer], write_files=False, stop_condition=over_time,
            )
            optimizable = dyn.atoms
            final: Atoms = getattr(optimizable, "atoms", optimizable)  # unwrap the cell filter
            energy = float(final.get_potential_energy())
            max_force = float(np.linalg.norm(optimizable.get_forces(), axis=1).max())
            steps = int(dyn.nsteps)
        relaxed = AseAtomsAdaptor.get_structure(final.copy())  # .copy() drops the calculator
        record_outcome(result, structure, relaxed, energy, max_force, steps, timed_out, config)
    except Exception as exc:  # noqa: BLE001 - any calculator failure is recorded, the batch goes on
        result.error = short_error(exc)
        # a calculator that failed half-way (e.g. EMT without parameters for an element) keeps stale state
        # that would fail the next structure of the same species with an unrelated error: start it afresh
        if hasattr(built.calculator, "reset"):
            built.calculator.reset()
    result.wall_time_s = time.perf_counter() - start
    return result


def relax_structure(
    structure: Structure,
    calculator: CalculatorConfig | BuiltCalculator,
    config: RelaxConfig = RelaxConfig(),
) -> RelaxResult:
    """Relax one structure with any registered calculator (GPAW, VASP, QE through their out-of-process backend)."""
    if isinstance(calculator, CalculatorConfig) and calculator.name in OUT_OF_PROCESS:
        return out_of_process_backend(calculator.name)(structure, calculator, config)
    built = calculator if isinstance(calculator, BuiltCalculator) else build_calculator(calculator)
    return relax_atoms(structure, built, config)
