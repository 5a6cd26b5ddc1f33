import pytest
from unimat_core.periodic_grid import PeriodicTableGrid
from pymatgen.core.periodic_table import Element


def test_every_element_h_to_lr_has_its_own_cell():
    grid = PeriodicTableGrid()
    assert grid.shape == (9, 18)
    assert grid.max_z == 103
    assert len(set(grid.positions)) == 103
    assert grid.element_mask().sum() == 103


def test_cells_follow_the_printed_table_with_f_block_rows():
    grid = PeriodicTableGrid()
    cell = lambda symbol: grid.positions[Element(symbol).Z - 1]  # noqa: E731
    assert cell("H") == (0, 0) and cell("He") == (0, 17)
    assert cell("Fe") == (3, 7) and cell("Ba") == (5, 1) and cell("Hf") == (5, 3)
    assert cell("La") == (7, 2) and cell("Lu") == (7, 16)
    assert cell("Ac") == (8, 2) and cell("Lr") == (8, 16)
    assert grid.cell_to_z[3, 7] == 26 and grid.z_to_row[26] == 3 and grid.z_to_col[26] == 7


def test_grid_round_trips_through_dict():
    grid = PeriodicTableGrid()
    assert PeriodicTableGrid.from_dict(grid.as_dict()) == grid


def test_cropped_grid_keeps_only_the_rows_and_columns_of_the_given_elements():
    z = {Element(s).Z for s in ("O", "Ti", "Sr", "La")}
    grid = PeriodicTableGrid.cropped(z)
    # rows: period 2 (O), 4 (Ti), 5 (Sr), the lanthanide row; columns: group 2 (Sr), La's column, 4 (Ti), 16 (O)
    assert grid.shape == (4, 4)
    assert grid.elements == tuple(sorted(z)) and grid.is_cropped
    assert not grid.contains(Element("Fe").Z) and grid.contains(Element("O").Z)
    # table order is kept
    assert grid.positions[Element("O").Z - 1] == (0, 3)
    assert grid.positions[Element("Ti").Z - 1] == (1, 2)
    assert grid.positions[Element("Sr").Z - 1] == (2, 0)
    assert grid.positions[Element("La").Z - 1] == (3, 1)
    assert grid.z_to_row[Element("Fe").Z] == -1 and grid.element_mask().sum() == 4
    assert PeriodicTableGrid.from_dict(grid.as_dict()) == grid
    assert "4 elements" in grid.describe_elements() and "O" in grid.describe_elements()


def test_cropping_to_one_element_gives_a_single_cell():
    grid = PeriodicTableGrid.cropped([6])
    assert grid.shape == (1, 1) and grid.cell_to_z[0, 0] == 6


def test_cropping_rejects_elements_the_full_grid_lacks():
    with pytest.raises(ValueError, match="not on the full grid"):
        PeriodicTableGrid.cropped([6, 118])
    with pytest.raises(ValueError, match="no elements"):
        PeriodicTableGrid.cropped([])
