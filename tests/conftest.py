"""Shared fixtures.

Prefect state of the tests goes to its own folder, `.prefect-test` (or $UNIMAT_TEST_PREFECT_HOME), never
to the `.prefect` of `make demo` / `make ui` that the Makefile exports, nor ~/.prefect: set, not
defaulted, because PREFECT_HOME is usually set already when the tests run. A PREFECT_API_URL (a live
server the user exported) is dropped for the same reason: test runs would land in the user's UI.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_PREFECT_HOME = os.environ.get("UNIMAT_TEST_PREFECT_HOME", str(REPO / ".prefect-test"))
os.environ["PREFECT_HOME"] = TEST_PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402


def perov5_test_csv(path: Path, n_rows: int) -> Path:
    """The first `n_rows` bundled perov_5 test crystals written as a CDVAE-format CSV at `path`."""
    import gzip

    from unimat_core.datasets.bundled import bundled_csv_paths

    with gzip.open(bundled_csv_paths("perov_5")["test"], "rt") as fh:
        pd.read_csv(fh).head(n_rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def bundled_tables() -> dict[str, pd.DataFrame]:
    """Every bundled structure, parsed once per session (both datasets, all splits)."""
    from unimat_core.datasets import load_bundled

    return {name: load_bundled(name).structures for name in ("perov_5", "carbon_24")}


@pytest.fixture
def nacl() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Na", "Cl", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0]])


@pytest.fixture
def perovskite() -> Structure:
    return Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.fixture(scope="session")
def trained_metals(tmp_path_factory) -> dict:
    """A campaign folder with fetch, tensorize and a trained tiny model of EMT metals (tests.flows.helpers), made
    once per session; tests copy it (`shutil.copytree`) to run rounds on it. Returns its paths and options."""
    from flows.campaign import discovery_campaign
    from flows.cli import _params, build_parser
    from tests.flows.helpers import metal_campaign_args, write_metal_source

    folder = tmp_path_factory.mktemp("metals")
    csv, hull = write_metal_source(folder / "inputs")
    args = metal_campaign_args(folder / "runs", csv, hull)
    discovery_campaign(**_params(build_parser().parse_args([*args, "--stop-after", "train"])))
    return {"campaign_dir": folder / "runs" / "metals", "csv": csv, "hull": hull}
