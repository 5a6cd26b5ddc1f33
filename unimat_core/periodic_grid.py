"""The 2-D periodic-table grid that gives every element a fixed (row, column) cell.

UniMat places atoms of element Z in the cell of Z, so chemically similar elements sit
next to each other and convolutions over the grid can share what they learn.
Layout: periods 1-7 on rows 0-6, groups 1-18 on columns 0-17; the f-block gets its own
rows (lanthanides La..Lu on row 7, actinides Ac..Lr on row 8, columns 2..16), exactly
like the usual printed table. Cells (5, 2) and (6, 2) stay empty, as do the rows' gaps.
Elements beyond Lr (Z > 103) are not on the grid: no crystal data exists for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pymatgen.core.periodic_table import Element

MAX_Z = 103
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

    `positions[z - 1]` is the (row, column) of element z. Frozen and hashable so a spec
    can be compared and cached.
    """

    height: int = 9
    width: int = 18
    positions: tuple[tuple[int, int], ...] = field(default_factory=_default_positions)

    def __post_init__(self) -> None:
        cells = set(self.positions)
        if len(cells) != len(self.positions):
            raise ValueError("two elements share one grid cell")
        for row, col in self.positions:
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

    def contains(self, z: int) -> bool:
        return 1 <= z <= self.max_z

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
        z_to_row[z], z_to_col[z] = row, col
        cell_to_z[row, col] = z
    for table in (z_to_row, z_to_col, cell_to_z):
        table.setflags(write=False)
    return z_to_row, z_to_col, cell_to_z
