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
