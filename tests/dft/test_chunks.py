"""The relaxation engine's chunks (dft.batch) without Prefect: planning resumes by id, a chunk writes one part, invalid decodes are skipped."""

import pytest

from dft.batch import finished_ids, plan_chunks, read_relaxed, read_rows, relax_ids, relaxed_summary
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from tests.flows.helpers import candidates, make_run

EMT = CalculatorConfig(**{"name": "emt", "device": "cpu", "model": None, "options": {}, "cpu_threads": 1})
FAST = RelaxConfig(**{"fmax": 0.05, "max_steps": 200, "optimizer": "FIRE", "relax_cell": True, "time_limit_s": 30.0})


def test_read_rows_skips_invalid_decodes_and_filters_ids(tmp_path):
    layout = make_run(tmp_path, "r", n_candidates=5)
    rows = read_rows(layout.generated)
    assert len(rows) == 5 and rows["valid"].all() and rows["structure"].notna().all()
    assert read_rows(layout.generated, ["r-gen-00003"])["id"].tolist() == ["r-gen-00003"]


def test_plan_chunks_names_parts_and_skips_finished_ids(tmp_path):
    layout = make_run(tmp_path, "r", n_candidates=5)
    plan = plan_chunks(layout.generated, layout.relaxed, 2)
    assert [len(c) for c in plan["chunks"]] == [2, 2, 1]
    assert [p.rsplit("/", 1)[1] for p in plan["parts"]] == ["part-00000.parquet", "part-00001.parquet",
                                                            "part-00002.parquet"]
    summary = relax_ids(layout.generated, plan["chunks"][1], plan["parts"][1], EMT, FAST)
    assert summary["n"] == 2 and not summary["skipped"]
    assert finished_ids(layout.relaxed) == set(plan["chunks"][1])

    again = plan_chunks(layout.generated, layout.relaxed, 2)
    assert again["n_done_before"] == 2
    assert sorted(sum(again["chunks"], [])) == sorted(plan["chunks"][0] + plan["chunks"][2])
    assert again["parts"][0].endswith("part-00002.parquet")  # never overwrites an existing part
    with pytest.raises(ValueError):
        plan_chunks(layout.generated, layout.relaxed, 0)


def test_relax_ids_records_results_and_is_idempotent(tmp_path):
    layout = make_run(tmp_path, "r", n_candidates=2)
    ids = ["r-gen-00000", "r-gen-00001"]
    part = layout.relaxed / "part-00000.parquet"
    first = relax_ids(layout.generated, ids, part, EMT, FAST)
    assert first == {"part": str(part), "n": 2, "n_converged": 2, "n_failed": 0, "skipped": False}
    frame = read_relaxed(layout.relaxed)
    assert frame["id"].tolist() == ids and (frame["calculator"] == "emt").all()
    assert (frame["energy_per_atom"] < 0).all() and (frame["max_force"] <= 0.05).all()
    assert "input_valid" in frame  # generate's own columns are kept, prefixed
    mtime = part.stat().st_mtime_ns
    assert relax_ids(layout.generated, ids, part, EMT, FAST)["skipped"]
    assert part.stat().st_mtime_ns == mtime


def test_unsupported_element_is_a_recorded_failure_not_an_exception(tmp_path):
    from pymatgen.core import Lattice, Structure
    from tests.flows.helpers import write_generated
    from unimat_core.run_layout import RunLayout

    layout = RunLayout(tmp_path, "r")
    bad = Structure(Lattice.cubic(4.0), ["U"], [[0, 0, 0]])  # EMT has no uranium parameters
    write_generated(layout, [candidates(1)[0], bad], n_invalid=0)
    relax_ids(layout.generated, ["gen-00000", "gen-00001"], layout.relaxed / "part-00000.parquet", EMT, FAST)
    frame = read_relaxed(layout.relaxed).set_index("id")
    assert frame.loc["gen-00000", "converged"] and not frame.loc["gen-00001", "converged"]
    assert frame.loc["gen-00001", "error"]
    summary = relaxed_summary(layout.relaxed)
    assert summary["n_relaxed"] == 2 and summary["n_failed"] == 1 and sum(summary["failure_reasons"].values()) == 1


def test_cells_beyond_max_sites_are_recorded_as_skipped(tmp_path):
    layout = make_run(tmp_path, "r", n_candidates=2)
    relax_ids(layout.generated, ["r-gen-00000", "r-gen-00001"], layout.relaxed / "part-00000.parquet", EMT, FAST,
              max_sites=3)  # the 4-atom cells are "too big"
    frame = read_relaxed(layout.relaxed)
    assert (~frame["converged"]).all() and frame["error"].str.startswith("skipped: 4 sites > max_sites 3").all()
    assert frame["energy_per_atom"].isna().all() and (frame["calculator"] == "emt").all()
