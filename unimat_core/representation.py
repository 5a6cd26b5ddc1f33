"""The UniMat representation: a crystal as a fixed-size L x H x W x 3 tensor plus 6 cell numbers.

Every element owns one cell of the periodic-table grid (`PeriodicTableGrid`) and L slots in
it. Slot l of element Z holds the fractional coordinates of the l-th Z atom of the crystal;
unused slots sit at the null location (all three coordinates equal to `null_value`, -1 by
default, outside the [0, 1) range of real atoms). The unit cell travels beside the tensor
as 6 normalised lattice parameters (`LatticeEncoding`).

`encode` and `decode` are vectorised over the whole batch: the only Python loops run over
crystals (to read pymatgen objects), never over atoms.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies, Element

from unimat_core.lattice_encoding import LatticeEncoding, lattice_matrices, reduced_volume_squared
from unimat_core.periodic_grid import PeriodicTableGrid

OnError = Literal["raise", "warn", "ignore"]

#: Smallest cell volume (A^3) a decoded crystal may have; the CDVAE validity cut-off.
MIN_CELL_VOLUME = 0.1


class RepresentationError(ValueError):
    """A crystal that cannot be written as a UniMat tensor; the message names it and why."""

    def __init__(self, structure_id: str, reason: str) -> None:
        super().__init__(f"structure {structure_id!r}: {reason}")
        self.structure_id = structure_id
        self.reason = reason


@dataclass(frozen=True)
class UniMatSpec:
    """Everything that fixes the tensor layout: grid, slots per element L, null location, cell encoding."""

    max_atoms_per_element: int
    grid: PeriodicTableGrid = field(default_factory=PeriodicTableGrid)
    null_value: float = -1.0
    lattice: LatticeEncoding = field(default_factory=LatticeEncoding)
    # every crystal is encoded in its Niggli-reduced cell (the same crystal, canonical cell), whoever encodes it:
    # tensorize, a round's fine-tune data, a model's loss on a find
    niggli: bool = False

    def __post_init__(self) -> None:
        if self.max_atoms_per_element < 1:
            raise ValueError("max_atoms_per_element (L) must be >= 1")
        if not self.null_value < 0:
            raise ValueError("null_value must lie outside [0, 1), below 0")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of one crystal's coordinate tensor, (L, H, W, 3)."""
        return (self.max_atoms_per_element, self.grid.height, self.grid.width, 3)

    @property
    def null_threshold(self) -> float:
        """Slots whose mean coordinate falls below this are read as empty (midway between null and 0)."""
        return self.null_value / 2

    def as_dict(self) -> dict:
        return {
            "max_atoms_per_element": self.max_atoms_per_element,
            "grid": self.grid.as_dict(),
            "null_value": self.null_value,
            "lattice": self.lattice.as_dict(),
            **({"niggli": True} if self.niggli else {}),  # specs from before the field read back unchanged
        }

    @classmethod
    def from_dict(cls, data: dict) -> UniMatSpec:
        return cls(
            max_atoms_per_element=int(data["max_atoms_per_element"]),
            grid=PeriodicTableGrid.from_dict(data["grid"]),
            null_value=float(data["null_value"]),
            lattice=LatticeEncoding.from_dict(data["lattice"]),
            niggli=bool(data.get("niggli", False)),
        )

    @classmethod
    def fit(cls, structures: Sequence[Structure], *, grid: PeriodicTableGrid | None = None, crop_grid: bool = False,
            max_atoms_per_element: int | None = None, niggli: bool = False) -> UniMatSpec:
        """The smallest L that holds every structure (unless given), and a cell encoding fitted to them.

        `crop_grid` keeps only the grid rows and columns holding the structures' elements: a
        smaller tensor and a faster model, which then cannot place any other element. `niggli`: the
        spec encodes Niggli-reduced cells, and its cell encoding is fitted to those.
        """
        grid = grid or PeriodicTableGrid()
        if crop_grid and structures:
            grid = PeriodicTableGrid.cropped({el.Z for s in structures for el in s.composition.elements}, grid)
        max_count = max((max(s.composition.values()) for s in structures), default=1)
        # a cell pymatgen cannot reduce is left out of the fit; encode() rejects its crystal with the reason
        cells = [_niggli_cell(s) for s in structures] if niggli else list(structures)
        parameters = np.array([c.lattice.parameters for c in cells if not isinstance(c, str)], dtype=np.float64)
        return cls(
            max_atoms_per_element=max_atoms_per_element or int(np.ceil(max_count)),
            grid=grid,
            lattice=LatticeEncoding.fit(parameters) if len(parameters) else LatticeEncoding(),
            niggli=niggli,
        )


@dataclass
class EncodeFailure:
    """A structure left out of an encoded batch, with the reason."""

    index: int
    structure_id: str
    reason: str


@dataclass
class EncodedBatch:
    """Encoded crystals: coords [N, L, H, W, 3] and lattice [N, 6], both float32.

    `ids[i]` names crystal i; `failures` lists the inputs that could not be encoded.
    """

    coords: np.ndarray
    lattice: np.ndarray
    ids: list[str]
    failures: list[EncodeFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class DecodedCrystal:
    """One decoded crystal: a Structure, or None with the reason it is invalid."""

    structure: Structure | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.structure is not None


def _structure_arrays(structure: Structure) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]] | str:
    """(atomic numbers, fractional coords, lattice parameters) of one crystal, or why it cannot be read."""
    try:
        species = structure.species  # one species per site, else AttributeError
    except AttributeError:
        return "partial occupancy / disorder is not representable (each site needs one species, occupancy 1)"
    dummies = sorted({str(sp) for sp in species if isinstance(sp, DummySpecies)})
    if dummies:
        return f"dummy species {', '.join(dummies)} have no place on the periodic-table grid"
    numbers = np.array([sp.Z for sp in species], dtype=np.int64)
    return numbers, structure.frac_coords, structure.lattice.parameters


def _niggli_cell(structure: Structure) -> Structure | str:
    """The crystal in its Niggli-reduced cell, or why pymatgen could not reduce it."""
    try:
        return structure.get_reduced_structure("niggli")
    except Exception as exc:  # pymatgen raises ValueError/ArithmeticError/LinAlgError for degenerate cells
        return f"Niggli reduction failed: {type(exc).__name__}: {exc}"


def _in_spec_cell(structure: Structure, spec: UniMatSpec) -> Structure | str:
    """The structure in the cell the spec encodes (Niggli-reduced when it says so), or why it has none."""
    return _niggli_cell(structure) if spec.niggli else structure


def _validate(
    numbers: np.ndarray,
    frac: np.ndarray,
    params: np.ndarray,
    counts_per_crystal: np.ndarray,
    spec: UniMatSpec,
) -> list[str | None]:
    """Reasons (or None) per crystal, computed with array operations over all atoms at once."""
    n = len(counts_per_crystal)
    crystal_of_atom = np.repeat(np.arange(n), counts_per_crystal)
    reasons: list[str | None] = [None] * n

    if n and not counts_per_crystal.all():
        for i in np.flatnonzero(counts_per_crystal == 0):
            reasons[i] = "structure has no atoms"

    off_grid = (numbers < 1) | (numbers > spec.grid.max_z)
    off_grid |= spec.grid.z_to_row[np.clip(numbers, 0, spec.grid.max_z)] < 0
    on_this_grid = spec.grid.describe_elements() if off_grid.any() else ""
    for i in np.unique(crystal_of_atom[off_grid]):
        bad = sorted(set(numbers[off_grid & (crystal_of_atom == i)].tolist()))
        names = ", ".join(Element.from_Z(z).symbol if 1 <= z <= 118 else f"dummy species (Z={z})" for z in bad)
        reasons[i] = f"element(s) {names} not on the periodic-table grid ({on_this_grid})"

    non_finite = ~np.isfinite(frac).all(axis=1)
    for i in np.unique(crystal_of_atom[non_finite]):
        reasons[i] = reasons[i] or "non-finite fractional coordinate"

    bad_cell = ~np.isfinite(params).all(axis=1) | (params[:, :3] <= 0).any(axis=1)
    bad_cell |= ~(reduced_volume_squared(params) > 0)
    for i in np.flatnonzero(bad_cell):
        reasons[i] = reasons[i] or f"degenerate or non-finite lattice parameters {np.round(params[i], 4).tolist()}"

    max_z = spec.grid.max_z + 1
    keys = crystal_of_atom * max_z + np.clip(numbers, 0, spec.grid.max_z)
    unique_keys, counts = np.unique(keys, return_counts=True)
    too_many = counts > spec.max_atoms_per_element
    for key, count in zip(unique_keys[too_many], counts[too_many]):
        i, z = divmod(int(key), max_z)
        reasons[i] = reasons[i] or (
            f"{count} {Element.from_Z(z).symbol} atoms exceed the {spec.max_atoms_per_element} slots "
            f"per element (L); raise max_atoms_per_element to at least {count}"
        )
    return reasons


def _report(failures: list[EncodeFailure], on_error: OnError) -> None:
    if not failures or on_error == "ignore":
        return
    if on_error == "raise":
        first = failures[0]
        raise RepresentationError(first.structure_id, first.reason)
    for failure in failures:
        warnings.warn(str(RepresentationError(failure.structure_id, failure.reason)), stacklevel=3)


def encode(
    structures: Sequence[Structure],
    spec: UniMatSpec,
    *,
    ids: Sequence[str] | None = None,
    on_error: OnError = "raise",
) -> EncodedBatch:
    """Pymatgen structures -> `EncodedBatch` (coords [N, L, H, W, 3], lattice [N, 6]).

    Atoms of one element fill its slots in the order they appear in the structure (in its Niggli cell when
    `spec.niggli`).
    Coordinates are wrapped into [0, 1). With on_error="warn" or "ignore", crystals that cannot
    be encoded are left out and listed in `failures`; with "raise" the first one raises
    `RepresentationError` naming the structure.
    """
    ids = [str(i) for i in (ids if ids is not None else range(len(structures)))]
    if len(ids) != len(structures):
        raise ValueError(f"{len(ids)} ids for {len(structures)} structures")

    cells = [_in_spec_cell(s, spec) for s in structures]
    read = [c if isinstance(c, str) else _structure_arrays(c) for c in cells]
    early = {i: r for i, r in enumerate(read) if isinstance(r, str)}
    arrays = [r if not isinstance(r, str) else (np.zeros(0, np.int64), np.zeros((0, 3)), (1.0, 1, 1, 90, 90, 90)) for r in read]

    counts_per_crystal = np.array([len(a[0]) for a in arrays], dtype=np.int64)
    numbers = np.concatenate([a[0] for a in arrays]) if arrays else np.zeros(0, np.int64)
    frac = np.concatenate([np.asarray(a[1], dtype=np.float64).reshape(-1, 3) for a in arrays]) if arrays else np.zeros((0, 3))
    params = np.array([a[2] for a in arrays], dtype=np.float64).reshape(-1, 6)

    reasons = _validate(numbers, frac, params, counts_per_crystal, spec)
    reasons = [early.get(i, r) for i, r in enumerate(reasons)]
    failures = [EncodeFailure(i, ids[i], r) for i, r in enumerate(reasons) if r is not None]
    _report(failures, on_error)

    keep = np.array([r is None for r in reasons], dtype=bool)
    out_index = np.cumsum(keep) - 1
    crystal_of_atom = np.repeat(np.arange(len(arrays)), counts_per_crystal)
    atom_kept = keep[crystal_of_atom] if len(crystal_of_atom) else np.zeros(0, bool)
    atom_crystal = out_index[crystal_of_atom[atom_kept]]
    atom_z = numbers[atom_kept]
    atom_frac = frac[atom_kept] % 1.0

    # Slot of each atom = its rank among atoms of the same element in the same crystal.
    group_key = atom_crystal * (spec.grid.max_z + 1) + atom_z
    order = np.argsort(group_key, kind="stable")
    sorted_keys = group_key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1] if len(sorted_keys) else np.zeros(0, np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_keys)]))
    slot = np.empty_like(order)
    slot[order] = np.arange(len(order)) - group_start

    n_out = int(keep.sum())
    coords = np.full((n_out, *spec.shape), spec.null_value, dtype=np.float32)
    atom_frac32 = atom_frac.astype(np.float32)
    atom_frac32[atom_frac32 >= 1.0] = 0.0  # 1 - 1e-9 rounds up to 1.0 in float32
    coords[atom_crystal, slot, spec.grid.z_to_row[atom_z], spec.grid.z_to_col[atom_z]] = atom_frac32
    lattice = spec.lattice.encode(params[keep]) if n_out else np.zeros((0, 6), np.float32)
    return EncodedBatch(coords=coords, lattice=lattice, ids=[ids[i] for i in np.flatnonzero(keep)], failures=failures)


@dataclass
class DecodedArrays:
    """Decoded crystals as flat arrays, before any pymatgen object is built.

    Atoms of crystal i are `numbers[offsets[i]:offsets[i+1]]` / `frac_coords[...]`, sorted by
    atomic number then slot. `reasons[i]` is None for a valid crystal.
    """

    numbers: np.ndarray
    frac_coords: np.ndarray
    offsets: np.ndarray
    lattice_parameters: np.ndarray
    reasons: list[str | None]


def decode_arrays(coords: np.ndarray, lattice: np.ndarray, spec: UniMatSpec) -> DecodedArrays:
    """Vectorised inverse of `encode` that never raises on sampled tensors.

    A slot is an atom when the mean of its coordinates lies above `spec.null_threshold`;
    atom coordinates wrap into [0, 1). Crystals with non-finite values, no atoms, or a cell
    that is degenerate or smaller than `MIN_CELL_VOLUME` get a reason instead of a structure.
    """
    coords = np.asarray(coords, dtype=np.float32)
    lattice = np.asarray(lattice, dtype=np.float32)
    if coords.ndim != 5 or coords.shape[1:] != spec.shape:
        raise ValueError(f"coords must have shape [N, {', '.join(map(str, spec.shape))}], got {list(coords.shape)}")
    if lattice.shape != (coords.shape[0], 6):
        raise ValueError(f"lattice must have shape [{coords.shape[0]}, 6], got {list(lattice.shape)}")
    n = coords.shape[0]

    with np.errstate(invalid="ignore", over="ignore"):
        # [N, L, H, W]; NaN/inf propagate. Three strided adds beat .sum(-1) over a length-3 axis ~10x.
        slot_sum = coords[..., 0] + coords[..., 1] + coords[..., 2]
        non_finite_crystal = ~np.isfinite(slot_sum.sum(axis=(1, 2, 3))) | ~np.isfinite(lattice).all(axis=1)
        occupied = slot_sum > 3 * spec.null_threshold  # mean coordinate above the threshold
    occupied &= spec.grid.element_mask()[None, None]
    occupied[non_finite_crystal] = False

    crystal, slot, row, col = np.nonzero(occupied)
    numbers = spec.grid.cell_to_z[row, col]
    # Order atoms by crystal, atomic number, then slot (nonzero walks slots before cells).
    order = np.lexsort((slot, numbers, crystal))
    crystal, numbers = crystal[order], numbers[order]
    frac = coords[crystal, slot[order], row[order], col[order]].astype(np.float64) % 1.0
    offsets = np.r_[0, np.cumsum(np.bincount(crystal, minlength=n))]

    params = spec.lattice.decode(lattice)
    lengths = params[:, :3]
    with np.errstate(invalid="ignore", over="ignore"):
        shape_factor = reduced_volume_squared(params)
        volume = np.prod(lengths, axis=1) * np.sqrt(np.clip(shape_factor, 0.0, None))

    reasons: list[str | None] = [None] * n
    for i in range(n):
        if non_finite_crystal[i]:
            reasons[i] = "non-finite value (NaN or inf) in the sampled tensor"
        elif offsets[i + 1] == offsets[i]:
            reasons[i] = "no atoms: every slot is at the null location"
        elif not (np.isfinite(lengths[i]).all() and shape_factor[i] > 0):
            reasons[i] = f"degenerate lattice parameters {np.round(params[i], 4).tolist()}"
        elif not volume[i] >= MIN_CELL_VOLUME:
            reasons[i] = f"cell volume {volume[i]:.3g} A^3 below {MIN_CELL_VOLUME} A^3"
    return DecodedArrays(numbers=numbers, frac_coords=frac, offsets=offsets, lattice_parameters=params, reasons=reasons)


_SITE_SPECIES: dict[int, Composition] = {}


def _site_species(z: int) -> Composition:
    """One shared, immutable single-element Composition per Z: building one per site is
    the dominant cost of creating a pymatgen Structure."""
    if z not in _SITE_SPECIES:
        _SITE_SPECIES[z] = Composition({Element.from_Z(z): 1})
    return _SITE_SPECIES[z]


def to_structures(arrays: DecodedArrays) -> list[DecodedCrystal]:
    """Build pymatgen Structures from `DecodedArrays` (the only per-crystal loop of decoding)."""
    out: list[DecodedCrystal] = []
    matrices = lattice_matrices(arrays.lattice_parameters)
    for i, reason in enumerate(arrays.reasons):
        if reason is not None:
            out.append(DecodedCrystal(None, reason))
            continue
        lo, hi = arrays.offsets[i], arrays.offsets[i + 1]
        species = [_site_species(int(z)) for z in arrays.numbers[lo:hi]]
        lattice = Lattice(matrices[i])
        out.append(DecodedCrystal(Structure(lattice, species, arrays.frac_coords[lo:hi], validate_proximity=False)))
    return out


def decode(coords: np.ndarray, lattice: np.ndarray, spec: UniMatSpec) -> list[DecodedCrystal]:
    """Coordinate tensor [N, L, H, W, 3] + lattice [N, 6] -> one `DecodedCrystal` per crystal."""
    return to_structures(decode_arrays(coords, lattice, spec))


def decode_batch(batch: EncodedBatch, spec: UniMatSpec) -> list[DecodedCrystal]:
    """Convenience: decode an `EncodedBatch`."""
    return decode(batch.coords, batch.lattice, spec)


def composition_grid(coords: np.ndarray, spec: UniMatSpec) -> np.ndarray:
    """[N, H, W] atom counts per element: the conditioning signal for composition-guided generation."""
    with np.errstate(invalid="ignore"):
        occupied = np.asarray(coords).mean(axis=-1) > spec.null_threshold
    return occupied.sum(axis=1).astype(np.float32)
