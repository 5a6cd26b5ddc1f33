"""Batched relaxation: one potential call per optimiser step for a whole batch, crystals queued in and out.

Every crystal keeps its own optimiser state on ASE's path (FIRE or BFGS on FrechetCellFilter
coordinates, `dft.optimizers` / `dft.cell_filter`), so a crystal relaxed in a batch takes the steps it
would take alone through `dft.relax`. What is shared is the force call: the batch's geometries go to
the potential together (`dft.potentials`). A crystal leaves the batch when it converges (max force
on atoms and cell rows below `fmax`), reaches its step or time limit, or blows up; queued crystals
take its place while the batch holds fewer than `batch_atoms` atoms.

Blow-ups are caught per crystal and per step (non-finite or huge forces, atoms collapsing onto each
other, the cell inverting or collapsing) and recorded as that crystal's `error`; the rest go on. A collapsed
geometry is caught before the potential call, which it would make the batch's most expensive.
Time: each batched call's wall time is shared among the crystals in it by atom count, plus each
crystal's own optimiser time; that share is its `wall_time_s` and what `time_limit_s` limits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from dft.cell_filter import CellCoordinates, cell_coordinates
from dft.errors import short_error
from dft.optimizers import Stepper, make_stepper
from dft.potentials import BatchedPotential, Evaluation, Outcome, Snapshot
from dft.relax import RelaxConfig, RelaxResult, record_outcome

BLOWUP_FORCE = 1000.0  # eV/A on one atom: far beyond any starting geometry we relax; a diverging model
MIN_DISTANCE = 0.3  # A: shorter than any bond (H2 0.74 A); machine-learned potentials have no data there
# A^3: about half the densest solids' (diamond 5.7, c-BN 5.9); an inverted cell has a negative volume. Solid
# prototypes of molecular elements (F, O, N) collapse below it under cell relaxation, where CHGNet's three-body
# graph grows with the square of ~150 neighbours per atom (GiBs, minutes: benchmarks/RESULTS.md, "Campaign")
MIN_VOLUME_PER_ATOM = 3.0


@dataclass
class _Crystal:
    """One crystal in flight: where it is in the input, its coordinates and its optimiser state."""

    index: int
    structure: Structure
    coords: CellCoordinates
    stepper: Stepper
    x: np.ndarray
    species: tuple
    numbers: np.ndarray
    steps: int = 0
    seconds: float = 0.0

    @classmethod
    def start(cls, index: int, structure: Structure, config: RelaxConfig) -> _Crystal:
        if len(structure) == 0:
            raise ValueError("structure has no sites")
        coords = cell_coordinates(structure.lattice.matrix, config.relax_cell)
        return cls(index, structure, coords, make_stepper(config.optimizer), coords.initial(structure.cart_coords),
                   tuple(structure.species), np.array(structure.atomic_numbers))  # both raise when disordered

    def snapshot(self) -> Snapshot:
        positions, cell = self.coords.atoms(self.x)
        return Snapshot(self.species, self.numbers, positions, cell)


def bad_evaluation(evaluation: Evaluation) -> str:
    """Why the potential's answer cannot be trusted, or "" when it can (the geometry was checked before the call,
    `collapsed`)."""
    if not (np.isfinite(evaluation.energy) and np.isfinite(evaluation.forces).all()
            and np.isfinite(evaluation.stress).all()):
        return "non-finite energy, forces or stress"
    largest = float(np.linalg.norm(evaluation.forces, axis=1).max())
    if largest > BLOWUP_FORCE:
        return f"force {largest:.3g} eV/A > {BLOWUP_FORCE:g}"
    return ""


def collapsed(snapshot: Snapshot) -> str:
    """Why this geometry is no solid (cell inverted or too dense, atoms on top of each other), or "". Checked
    before the potential sees it: a collapsed cell is the most expensive input a graph potential can get."""
    n_atoms = len(snapshot.numbers)
    volume = float(np.linalg.det(snapshot.cell))
    if volume < MIN_VOLUME_PER_ATOM * n_atoms:
        return f"cell inverted or collapsed (volume {volume:.3g} A^3 for {n_atoms} atoms)"
    positions = np.ascontiguousarray(snapshot.positions, dtype=float)
    centers, neighbors, images, distances = find_points_in_spheres(
        positions, positions, r=MIN_DISTANCE, pbc=np.array([1, 1, 1], dtype=np.int64),
        lattice=np.ascontiguousarray(snapshot.cell, dtype=float), tol=1e-8)
    pairs = (centers != neighbors) | images.any(axis=1)  # not an atom paired with itself
    centers, neighbors, distances = centers[pairs], neighbors[pairs], distances[pairs]
    if len(distances):
        k = int(np.argmin(distances))
        first, second = sorted((int(centers[k]), int(neighbors[k])))
        return f"atoms {first} and {second} collapsed to {distances[k]:.2f} A"
    return ""


def _advance(crystal: _Crystal, snapshot: Snapshot, outcome: Outcome, config: RelaxConfig, calculator: str,
             version: str) -> RelaxResult | None:
    """Check the crystal's new forces; a result when it is done, else take one optimiser step (None)."""
    result = RelaxResult(structure=crystal.structure, calculator=calculator, calculator_version=version)
    if isinstance(outcome, str):
        result.error = outcome
        return result
    reason = bad_evaluation(outcome)
    if reason:
        result.error = f"blow-up at step {crystal.steps}: {reason}"
        return result
    forces = crystal.coords.forces(crystal.x, outcome.forces, outcome.stress)
    max_force = float(np.linalg.norm(forces, axis=1).max())
    timed_out = crystal.seconds > config.time_limit_s
    if max_force < config.fmax or crystal.steps >= config.max_steps or timed_out:
        return record_outcome(result, crystal.structure, snapshot.structure(), outcome.energy, max_force,
                              crystal.steps, timed_out, config)
    crystal.x = crystal.stepper.step(crystal.x, forces)
    crystal.steps += 1
    return None


def relax_batched(structures: Sequence[Structure], potential: BatchedPotential, config: RelaxConfig = RelaxConfig(),
                  *, calculator: str = "", version: str = "") -> list[RelaxResult]:
    """Relax every structure (positions and, with `relax_cell`, the cell); one result per input, in order.

    Never raises for a bad structure: its result carries the error and the input structure.
    """
    if config.batch_atoms < 1:
        raise ValueError("batch_atoms must be >= 1")
    results: list[RelaxResult | None] = [None] * len(structures)

    def failed(index: int, exc: Exception) -> None:
        results[index] = RelaxResult(structure=structures[index], calculator=calculator, calculator_version=version,
                                     error=short_error(exc))

    queue = deque(enumerate(structures))
    active: list[_Crystal] = []
    while queue or active:
        in_flight = sum(len(c.numbers) for c in active)
        while queue and (not active or in_flight + len(queue[0][1]) <= config.batch_atoms):
            index, structure = queue.popleft()
            try:  # e.g. a disordered or empty structure has no optimiser coordinates
                active.append(_Crystal.start(index, structure, config))
                in_flight += len(structure)
            except Exception as exc:  # noqa: BLE001 - recorded, the batch goes on
                failed(index, exc)
        if not active:
            continue
        kept = []
        for crystal in active:
            snapshot = crystal.snapshot()
            reason = collapsed(snapshot)
            if reason:  # caught before the potential call it would make expensive
                results[crystal.index] = RelaxResult(structure=crystal.structure, calculator=calculator,
                                                     calculator_version=version,
                                                     error=f"blow-up at step {crystal.steps}: {reason}")
            else:
                kept.append((crystal, snapshot))
        active, snapshots = [c for c, _ in kept], [s for _, s in kept]
        if not active:
            continue
        in_flight = sum(len(c.numbers) for c in active)
        start = time.perf_counter()
        outcomes = potential.evaluate(snapshots)
        per_atom = (time.perf_counter() - start) / in_flight
        staying = []
        for crystal, snapshot, outcome in zip(active, snapshots, outcomes):
            start = time.perf_counter()
            crystal.seconds += per_atom * len(crystal.numbers)
            try:
                result = _advance(crystal, snapshot, outcome, config, calculator, version)
            except Exception as exc:  # noqa: BLE001 - this crystal's arithmetic failed, not the batch's
                failed(crystal.index, exc)
                continue
            crystal.seconds += time.perf_counter() - start
            if result is None:
                staying.append(crystal)
            else:
                result.wall_time_s = crystal.seconds
                results[crystal.index] = result
        active = staying
    return results  # type: ignore[return-value]
