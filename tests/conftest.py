"""Shared fixtures.

Prefect state of the tests goes to its own folder, `.prefect-test` (or $UNIMAT_TEST_PREFECT_HOME), never
to the `.prefect` of `make demo` / `make ui` that the Makefile exports, nor ~/.prefect: set, not
defaulted, because PREFECT_HOME is usually set already when the tests run. A PREFECT_API_URL (a live
server the user exported) is dropped for the same reason: test runs would land in the user's UI.

`make test` runs the suite in two pytest-xdist workers, one per core. Each worker gets a Prefect home of its
own (`.prefect-test-gw0`, ...: two temporary servers on one SQLite file would lock each other) and one torch
thread (OMP_NUM_THREADS, which `cpu_budget` honours: two workers with a thread per core each would oversubscribe
the cores ~10x). The tests that start servers or a SLURM cluster form one group (`SERIAL_DIRS`), run by one
worker, so each session-wide server starts once and the cluster's ports and daemons are never doubled; the tests
of each costly session fixture (`SHARED_FIXTURES`) form one too, so no two workers build the same one.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # set by pytest-xdist in its workers before conftests load
TEST_PREFECT_HOME = os.environ.get("UNIMAT_TEST_PREFECT_HOME", str(REPO / ".prefect-test"))
if XDIST_WORKER:
    TEST_PREFECT_HOME = f"{TEST_PREFECT_HOME}-{XDIST_WORKER}"
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ["PREFECT_HOME"] = TEST_PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

SERIAL_DIRS = ("cluster", "deployments")  # tests/<dir>: real servers, a SLURM cluster; one xdist worker runs them
# session fixtures that cost tens of seconds: the tests that use one run on one worker, which builds it once
SHARED_FIXTURES = ("overfit_model", "trained_metals")


def xdist_group_of(item: pytest.Item) -> str | None:
    """The worker group of a test under `--dist loadgroup` (None: any worker)."""
    tests = REPO / "tests"
    path = Path(item.path)
    if path.is_relative_to(tests) and path.relative_to(tests).parts[0] in SERIAL_DIRS:
        return "servers"
    return next((name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())), None)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Marked as each test is collected, before any pytest_collection_modifyitems (xdist reads the groups in
    its own, whose order against a conftest's is not guaranteed)."""
    group = xdist_group_of(item)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


def perov5_test_csv(path: Path, n_rows: int) -> Path:
    """The first `n_rows` bundled perov_5 test crystals written as a CDVAE-format CSV at `path`."""
    import gzip

    from unimat_core.datasets.bundled import bundled_csv_paths

    with gzip.open(bundled_csv_paths("perov_5")["test"], "rt") as fh:
        pd.read_csv(fh).head(n_rows).to_csv(path, index=False)
    return path


class _BundledTables(dict):
    """Dataset name -> every bundled structure of it (all splits), parsed on first use (~15 s each)."""

    def __missing__(self, name: str) -> pd.DataFrame:
        from unimat_core.datasets import load_bundled

        self[name] = load_bundled(name).structures
        return self[name]


@pytest.fixture(scope="session")
def bundled_tables() -> dict[str, pd.DataFrame]:
    """The bundled datasets' structures, each parsed once per session (per xdist worker) when a test first needs it."""
    return _BundledTables()


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
