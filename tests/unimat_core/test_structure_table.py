import pandas as pd
import pytest

from unimat_core.structure_table import (
    CORE_COLUMNS,
    StructureTableError,
    read_structures,
    records_to_frame,
    structures_of,
    write_structures,
)


def test_write_read_is_lossless(tmp_path, bundled_tables):
    frame = bundled_tables["perov_5"].head(200)
    path = write_structures(frame, tmp_path / "structures.parquet")
    back = read_structures(path)
    pd.testing.assert_frame_equal(back, frame.reset_index(drop=True), check_dtype=True)
    assert tuple(back.columns[: len(CORE_COLUMNS)]) == CORE_COLUMNS
    assert structures_of(back) == structures_of(frame)


def test_records_to_frame_with_properties(tmp_path, nacl, perovskite):
    frame = records_to_frame([nacl, perovskite], ["nacl", "sto"], split=["train", "test"], source="hand-made",
                             properties={"energy_per_atom": [-3.5, -8.1]})
    assert frame.loc[1, "reduced_formula"] == "SrTiO3" and frame.loc[1, "chemsys"] == "O-Sr-Ti"
    assert frame.loc[0, "n_sites"] == 4 and frame.loc[0, "n_elements"] == 2
    back = read_structures(write_structures(frame, tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(back, frame)
    assert structures_of(back)[0] == nacl


def test_schema_violations_are_clear(tmp_path, nacl):
    with pytest.raises(StructureTableError, match="unique"):
        records_to_frame([nacl, nacl], ["x", "x"], source="t")
    with pytest.raises(StructureTableError, match="clashes"):
        records_to_frame([nacl], ["x"], source="t", properties={"formula": ["NaCl"]})
    frame = records_to_frame([nacl], ["x"], source="t").drop(columns=["chemsys"])
    with pytest.raises(StructureTableError, match="chemsys"):
        write_structures(frame, tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError):
        read_structures(tmp_path / "missing.parquet")
