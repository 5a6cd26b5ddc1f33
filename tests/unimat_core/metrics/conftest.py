"""Small, hand-checkable inputs for the metrics tests (CrystalNN costs ~0.1 s per structure)."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from unimat_core.datasets import bundled_csv_paths
from unimat_core.datasets.cdvae_csv import read_cdvae_csv
from unimat_core.structure_table import records_to_frame

N_TEST_SUBSET = 12


@pytest.fixture(scope="session")
def perov_test_subset(tmp_path_factory) -> pd.DataFrame:
    """The first rows of the bundled perov_5 test split, read with the real CDVAE-CSV loader."""
    source = bundled_csv_paths("perov_5")["test"]
    with gzip.open(source, "rt") as handle:
        head = pd.read_csv(handle, nrows=N_TEST_SUBSET)
    path = tmp_path_factory.mktemp("perov") / "test.csv"
    head.to_csv(path, index=False)
    table = read_cdvae_csv(path, split="test", source="cdvae:perov_5", workers=1).structures
    assert len(table) == N_TEST_SUBSET
    return table


def rocksalt(a: float = 5.64, species: tuple[str, str] = ("Na", "Cl")) -> Structure:
    return Structure(Lattice.cubic(a), [species[0]] * 4 + [species[1]] * 4,
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                      [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])


def cubic_perovskite(a: float = 3.905, species: tuple[str, str, str] = ("Sr", "Ti", "O")) -> Structure:
    a_site, b_site, x = species
    return Structure(Lattice.cubic(a), [a_site, b_site, x, x, x],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def table_of(structures: list[Structure], prefix: str = "s") -> pd.DataFrame:
    return records_to_frame(structures, [f"{prefix}{i}" for i in range(len(structures))], source="test")
