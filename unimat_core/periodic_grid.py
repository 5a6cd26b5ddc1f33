"""The 2-D periodic-table grid that gives every element a fixed (row, column) cell.

UniMat places atoms of element Z in the cell of Z, so chemically similar elements sit
next to each other and convolutions over the grid can share what they learn.
Layout: periods 1-7 on rows 0-6, groups 1-18 on columns 0-17; the f-block gets its own
rows (lanthanides La..Lu on row 7, actinides Ac..Lr on row 8, columns 2..16), exactly
like the usual printed table. Cells (5, 2) and (6, 2) stay empty, as do the rows' gaps.
Elements beyond Lr (Z > 103) are not on the grid: no crystal data exists for them.

`PeriodicTableGrid.cropped(elements)` keeps only the rows and columns that hold a dataset's
elements, in the same order: neighbours in the table stay neighbours, every other element is
off the grid. The tensor shrinks with it (carbon_24: 1 of 162 cells; perov_5: 6 x 17).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pymatgen.core.periodic_table import Element

MAX_Z = 103
OFF_GRID = (-1, -1)  # position of an element a cropped grid leaves out
LANTHANIDES = range(57, 72)
ACTINIDES = range(89, 104)


def _default_position(z: int) -> tuple[int, int]:
    if z in LANTHANIDES:
        return 7, 2 + (z - LANTHANIDES.start)
    if z in ACTINIDES:
        return 8, 2 + (z - ACTINIDES.start)
    element = Element.from_Z(z)
    return element.row - 1, element.group - 1


@lru_cache(maxsize=1)
def _default_positions() -> tuple[tuple[int, int], ...]:
    return tuple(_default_position(z) for z in range(1, MAX_Z + 1))


@dataclass(frozen=True)
class PeriodicTableGrid:
    """Maps atomic numbers 1..len(positions) to cells of an H x W grid.

    `positions[z - 1]` is the (row, column) of element z, or `OFF_GRID` for an element this
    grid leaves out. Frozen and hashable so a spec can be compared and cached.
    """

    height: int = 9
    width: int = 18
    positions: tuple[tuple[int, int], ...] = field(default_factory=_default_positions)

    def __post_init__(self) -> None:
        placed = [p for p in self.positions if p != OFF_GRID]
        if not placed:
            raise ValueError("a grid needs at least one element")
        if len(set(placed)) != len(placed):
            raise ValueError("two elements share one grid cell")
        for row, col in placed:
            if not (0 <= row < self.height and 0 <= col < self.width):
                raise ValueError(f"cell {(row, col)} outside a {self.height} x {self.width} grid")

    @property
    def max_z(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def z_to_row(self) -> np.ndarray:
        """Row of each atomic number; index 0 (no element) is -1."""
        return _lookup_tables(self)[0]

    @property
    def z_to_col(self) -> np.ndarray:
        return _lookup_tables(self)[1]

    @property
    def cell_to_z(self) -> np.ndarray:
        """[H, W] atomic number of each cell, 0 where no element lives."""
        return _lookup_tables(self)[2]

    @property
    def elements(self) -> tuple[int, ...]:
        """Atomic numbers that have a cell, ascending."""
        return tuple(z for z, p in enumerate(self.positions, start=1) if p != OFF_GRID)

    @property
    def is_cropped(self) -> bool:
        return len(self.elements) < self.max_z

    def contains(self, z: int) -> bool:
        return 1 <= z <= self.max_z and self.positions[z - 1] != OFF_GRID

    def describe_elements(self) -> str:
        """Which elements the grid holds, for error messages."""
        symbols = [Element.from_Z(z).symbol for z in self.elements]
        if not self.is_cropped:
            return f"the grid holds {symbols[0]}..{symbols[-1]}"
        shown = ", ".join(symbols[:12]) + (", ..." if len(symbols) > 12 else "")
        return f"this cropped grid holds only the {len(symbols)} elements of its training data ({shown})"

    @classmethod
    def cropped(cls, elements: Iterable[int], full: PeriodicTableGrid | None = None) -> PeriodicTableGrid:
        """The rows and columns of `full` that hold any of `elements` (atomic numbers), in order.

        Other elements are off the grid, so a model on it cannot place them; the layout of the
        kept cells is the periodic table's, so convolutions still see chemical neighbours.
        """
        full = full or cls()
        wanted = sorted({int(z) for z in elements})
        missing = [z for z in wanted if not full.contains(z)]
        if missing or not wanted:
            raise ValueError(f"cannot crop to {wanted}: {missing or 'no elements'} not on the full grid")
        rows = sorted({full.positions[z - 1][0] for z in wanted})
        cols = sorted({full.positions[z - 1][1] for z in wanted})
        new_row = {r: i for i, r in enumerate(rows)}
        new_col = {c: i for i, c in enumerate(cols)}
        keep = set(wanted)
        positions = tuple((new_row[p[0]], new_col[p[1]]) if z in keep else OFF_GRID
                          for z, p in enumerate(full.positions, start=1))
        return cls(height=len(rows), width=len(cols), positions=positions)

    def element_mask(self) -> np.ndarray:
        """[H, W] boolean: True where an element lives."""
        return self.cell_to_z > 0

    def as_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "positions": [list(p) for p in self.positions]}

    @classmethod
    def from_dict(cls, data: dict) -> PeriodicTableGrid:
        return cls(
            height=int(data["height"]),
            width=int(data["width"]),
            positions=tuple((int(r), int(c)) for r, c in data["positions"]),
        )


@lru_cache(maxsize=8)
def _lookup_tables(grid: PeriodicTableGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z_to_row = np.full(grid.max_z + 1, -1, dtype=np.int64)
    z_to_col = np.full(grid.max_z + 1, -1, dtype=np.int64)
    cell_to_z = np.zeros(grid.shape, dtype=np.int64)
    for z, (row, col) in enumerate(grid.positions, start=1):
        if (row, col) == OFF_GRID:
            continue
        z_to_row[z], z_to_col[z] = row, col
        cell_to_z[row, col] = z
    for table in (z_to_row, z_to_col, cell_to_z):
        table.setflags(write=False)
    return z_to_row, z_to_col, cell_to_z
