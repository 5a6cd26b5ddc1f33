"""Shared dft fixtures: one CHGNet per session (loading takes seconds) and seeded perturbed test crystals."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure


@pytest.fixture(scope="session")
def chgnet():
    """CHGNet 0.3.0 on CPU (weights from the wheel), built once: its ASE calculator and batched view."""
    pytest.importorskip("chgnet", reason="needs the `mlip` extra")
    from dft.calculators import CalculatorConfig, build_calculator

    return build_calculator(CalculatorConfig("chgnet", device="cpu"))


def perturbed_test_crystals(dataset: str, n: int, seed: int = 0, strain: float = 0.03,
                            rattle: float = 0.05) -> list[Structure]:
    """The first `n` bundled test-split crystals, strained (each axis up to `strain`) and rattled (`rattle` A), seeded.

    The bundled crystals are already relaxed; perturbing them imitates candidates that need relaxing.
    """
    from unimat_core.datasets.bundled import bundled_csv_paths
    from unimat_core.datasets.cdvae_csv import parse_cif
    from unimat_core.structure_table import structure_from_json

    with gzip.open(bundled_csv_paths(dataset)["test"], "rt") as fh:
        cifs = pd.read_csv(fh, nrows=n)["cif"]
    rng = np.random.default_rng(seed)
    crystals = []
    for i, cif in enumerate(cifs):
        structure = structure_from_json(parse_cif(cif)["structure"])
        structure.apply_strain(rng.uniform(-strain, strain, size=3))  # each lattice vector by its own factor
        crystals.append(structure.perturb(rattle, seed=seed * 1000 + i))
    return crystals


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Bit-for-bit comparisons (batched potential vs its ASE calculator) hold for one intra-op thread: with
    several, torch's reductions may add in another order from call to call. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
