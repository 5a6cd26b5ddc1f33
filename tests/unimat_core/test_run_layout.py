"""RunLayout owns the run's paths; plots sit beside parquet datasets; atomic writes leave no half file."""

import pandas as pd
import pytest

from unimat_core import atomic
from unimat_core.run_layout import RunLayout


def test_plots_and_reports_stay_out_of_parquet_datasets(tmp_path):
    layout = RunLayout(tmp_path, "demo")
    for dataset in (layout.generated, layout.relaxed):
        for plot in (layout.relax_steps_plot,):
            assert dataset not in plot.parents
    layout.relaxed.mkdir(parents=True)
    pd.DataFrame({"id": ["a", "b"], "energy": [1.0, 2.0]}).to_parquet(layout.relaxed / "part-00000.parquet")
    atomic.write_bytes(layout.relax_steps_plot, b"\x89PNG\r\n\x1a\n")
    assert pd.read_parquet(layout.relaxed)["id"].tolist() == ["a", "b"]  # the folder reads back as one table


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "settings.json"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["settings.json"]
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and len(list(path.parent.iterdir())) == 1
