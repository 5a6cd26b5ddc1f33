"""tasks.evaluate as a real Prefect task (ephemeral server): parquet in, metrics parquet + artifact out."""

from __future__ import annotations

import json
import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy 2-core box: slow first start

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from prefect import flow  # noqa: E402

from tasks.evaluate import evaluate_generated  # noqa: E402
from tasks.evaluate_inputs import known_sources  # noqa: E402
from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt, table_of  # noqa: E402
from unimat_core.metrics import MetricsConfig  # noqa: E402
from unimat_core.run_layout import RunLayout  # noqa: E402
from unimat_core.structure_table import write_structures  # noqa: E402


def _generation_folder(path) -> None:
    """Two parts like unimat_core.model.generation writes: decoded rows and one failed decode."""
    path.mkdir(parents=True)
    good = table_of([rocksalt(), rocksalt(5.7), cubic_perovskite()], prefix="gen-")
    good["valid"], good["reason"] = True, None
    bad = good.iloc[:1].copy()
    bad[["id", "structure", "valid", "reason"]] = ["gen-bad", None, False, "no atoms decoded"]
    good.to_parquet(path / "part-00000.parquet", index=False)
    bad.to_parquet(path / "part-00001.parquet", index=False)


@pytest.mark.slow  # Prefect's temporary server: ~20 s to start, more on a busy box
def test_evaluate_generated_writes_metrics_and_returns_a_small_summary(tmp_path):
    _generation_folder(tmp_path / "generate")
    reference = table_of([rocksalt(), cubic_perovskite(), cubic_perovskite(species=("Ba", "Ti", "O"))], prefix="ref-")
    reference["split"] = ["test", "test", "val"]
    write_structures(reference, tmp_path / "structures.parquet")
    write_structures(table_of([cubic_perovskite()], prefix="train-"), tmp_path / "training.parquet")

    @flow
    def run() -> dict:
        return evaluate_generated(str(tmp_path / "generate"), str(tmp_path / "structures.parquet"),
                                  [("training", str(tmp_path / "training.parquet"))],
                                  MetricsConfig(n_workers=1, dataset="perov_5"), str(tmp_path / "evaluate"),
                                  reference_split="test")

    summary = run()
    assert summary["n_generated"] == 4 and summary["n_valid"] == 3
    assert summary["validity"] == 0.75
    assert summary["uniqueness"] == 2 / 3  # the 5.7 A rock salt duplicates the first
    assert summary["novelty"] == 2 / 3  # both rock salts are new (the duplicate too); SrTiO3 is known
    rows = pd.read_parquet(summary["per_structure"]).set_index("id")
    assert rows.loc["gen-bad", "reason"] == "generation: no atoms decoded"
    assert pd.read_parquet(summary["summary"])["n_reference"].item() == 2  # the test split only
    assert "COV-R" in open(summary["markdown"]).read()


def test_known_sources_cover_every_split_and_the_reference_hull(tmp_path):
    """A bundled fetch of only the test split adds the bundled dataset; the score stage's hull joins once it exists."""
    layout = RunLayout(tmp_path, "k")
    layout.stage_dir("fetch").mkdir(parents=True)
    (layout.stage_dir("fetch") / "source.json").write_text(json.dumps({"kind": "bundled", "name": "perov_5"}))
    known, bundled = known_sources(layout, {"test"})
    assert known == [("perov_5", str(layout.structures))] and bundled == "perov_5"
    layout.stage_dir("score").mkdir(parents=True)
    layout.reference.write_bytes(b"")
    known, bundled = known_sources(layout, {"val", "test"})  # every bundled split fetched: no second copy
    assert known == [("perov_5", str(layout.structures)), ("reference-hull", str(layout.reference))]
    assert bundled is None
