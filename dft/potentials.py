"""Energies, forces and stresses of many crystals per call: the batched engine's view of a potential.

`ChgnetBatch` and `SevennetBatch` put every crystal of a batch into one graph and one forward pass
of the potential's own model (CHGNet's `BatchedGraph`, SevenNet's torch-geometric batch), forces and
stress from one backward pass. `AseCalculatorBatch` wraps any ASE calculator one crystal at a time:
it lets EMT drive the batched engine, which is how the engine is checked step for step against ASE.

A crystal whose graph cannot be built gets its error instead of an `Evaluation`; when the batched
pass itself fails, each crystal is evaluated alone so only the culprit carries the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ase import Atoms
from pymatgen.core import Lattice, Structure

from dft.errors import short_error


@dataclass(frozen=True)
class Snapshot:
    """One crystal's current geometry: species (pymatgen), atomic numbers, positions (A) and cell rows (A)."""

    species: tuple
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray

    def structure(self) -> Structure:
        return Structure(Lattice(self.cell), list(self.species), self.positions, coords_are_cartesian=True)

    def atoms(self) -> Atoms:
        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)


@dataclass(frozen=True)
class Evaluation:
    """Total energy (eV), forces (n x 3, eV/A) and stress (3 x 3, eV/A^3, ASE's sign convention)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray


Outcome = Evaluation | str  # a string is the reason the crystal could not be evaluated


class BatchedPotential(Protocol):
    def evaluate(self, crystals: Sequence[Snapshot]) -> list[Outcome]:
        """One outcome per crystal, in order."""


def _isolating(prepare: Callable[[Snapshot], Any], forward: Callable[[list[Any]], list[Evaluation]],
               crystals: Sequence[Snapshot]) -> list[Outcome]:
    """`forward` over every crystal `prepare` accepts; if the batched pass fails, crystal by crystal."""
    outcomes: list[Outcome | None] = [None] * len(crystals)
    inputs: dict[int, Any] = {}
    for i, crystal in enumerate(crystals):
        try:
            inputs[i] = prepare(crystal)
        except Exception as exc:  # noqa: BLE001 - one crystal's bad geometry is its own error
            outcomes[i] = short_error(exc)
    if inputs:
        try:
            for i, evaluation in zip(inputs, forward(list(inputs.values()))):
                outcomes[i] = evaluation
        except Exception:  # noqa: BLE001 - find the culprit instead of failing the batch
            for i, item in inputs.items():
                try:
                    outcomes[i] = forward([item])[0]
                except Exception as exc:  # noqa: BLE001
                    outcomes[i] = short_error(exc)
    return outcomes  # type: ignore[return-value]


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(float)


class ChgnetBatch:
    """CHGNet on a batch: one `BatchedGraph`, energies from the model, forces and stress by one autograd call.

    CHGNet's own `forward` builds the double-backward graph (create_graph=True, for training); here the
    gradients are taken once without it, which halves the cost per step and gives the same numbers.
    """

    def __init__(self, model) -> None:
        self.model = model.eval()

    @property
    def device(self):
        return next(self.model.parameters()).device

    def evaluate(self, crystals: Sequence[Snapshot]) -> list[Outcome]:
        device = self.device
        return _isolating(lambda c: self.model.graph_converter(c.structure()).to(device), self._forward, crystals)

    def _forward(self, graphs: list) -> list[Evaluation]:
        import torch
        from chgnet.model.model import BatchedGraph

        model = self.model
        batch = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                         angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
        prediction = model._compute(batch)  # energy per atom for an intensive model (CHGNet 0.3.0)
        n_atoms = prediction["atoms_per_graph"]
        energy = prediction["e"] * n_atoms if model.is_intensive else prediction["e"]
        gradients = torch.autograd.grad(energy.sum(), [*batch.atom_positions, *batch.strains])
        with torch.no_grad():
            if model.composition_model is not None:  # fixed per-element offsets: no force, no stress
                offset = model.composition_model(graphs)
                energy = energy + (offset * n_atoms if model.is_intensive else offset)
        n = len(graphs)
        return [Evaluation(float(energy[k]), -_numpy(gradients[k]), _numpy(gradients[n + k] / batch.volumes[k]))
                for k in range(n)]


class SevennetBatch:
    """SevenNet on a torch-geometric batch of its own graphs (the model switched to batch mode per call)."""

    def __init__(self, model, cutoff: float, modal: str | None = None) -> None:
        self.model, self.cutoff, self.modal = model, cutoff, modal

    def evaluate(self, crystals: Sequence[Snapshot]) -> list[Outcome]:
        return _isolating(self._graph, self._forward, crystals)

    def _graph(self, crystal: Snapshot):
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(crystal.atoms(), self.cutoff))
        if self.modal:
            data[KEY.DATA_MODALITY] = self.modal
        return data

    def _forward(self, graphs: list) -> list[Evaluation]:
        import sevenn._keys as KEY
        from torch_geometric.data import Batch

        device = next(self.model.parameters()).device
        batch = Batch.from_data_list(graphs).to(device)
        self.model.set_is_batch_data(True)
        try:
            output = self.model(batch)
        finally:
            self.model.set_is_batch_data(False)  # the ASE calculator shares this model, one graph at a time
        energies = _numpy(output[KEY.PRED_TOTAL_ENERGY]).reshape(-1)
        forces = np.split(_numpy(output[KEY.PRED_FORCE]), np.cumsum([len(g[KEY.POS]) for g in graphs])[:-1])
        stress6 = -_numpy(output[KEY.PRED_STRESS])  # SevenNet order xx yy zz xy yz zx, opposite sign to ASE
        xx, yy, zz, xy, yz, zx = stress6.T
        stress = np.stack([np.stack([xx, xy, zx], -1), np.stack([xy, yy, yz], -1), np.stack([zx, yz, zz], -1)], 1)
        return [Evaluation(float(e), f, s) for e, f, s in zip(energies, forces, stress)]


class AseCalculatorBatch:
    """Any ASE calculator, one crystal per call: EMT (and the engine's step-for-step check against ASE)."""

    def __init__(self, calculator) -> None:
        self.calculator = calculator

    def evaluate(self, crystals: Sequence[Snapshot]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for crystal in crystals:
            try:
                atoms = crystal.atoms()
                atoms.calc = self.calculator
                outcomes.append(Evaluation(float(atoms.get_potential_energy()), np.array(atoms.get_forces()),
                                           np.array(atoms.get_stress(voigt=False))))
            except Exception as exc:  # noqa: BLE001 - e.g. EMT has no parameters for the element
                outcomes.append(short_error(exc))
                if hasattr(self.calculator, "reset"):  # as dft.relax does: no half-initialised state for the next
                    self.calculator.reset()
        return outcomes
