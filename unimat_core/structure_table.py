"""The one parquet schema for crystal structures, shared by every stage that stores crystals.

Core columns (always present, in this order, with these Arrow types):

| column          | type   | meaning                                                            |
|-----------------|--------|--------------------------------------------------------------------|
| id              | string | unique within the table (source id, e.g. "mp-149" or "18517")      |
| formula         | string | full formula, pymatgen `Composition.formula`, e.g. "Cd1 Cu1 N3"    |
| reduced_formula | string | e.g. "CdCuN3"                                                      |
| chemsys         | string | sorted elements joined by "-", e.g. "Cd-Cu-N"                      |
| n_sites         | int32  | sites in the cell                                                  |
| n_elements      | int32  | distinct elements                                                  |
| structure       | string | pymatgen `Structure.as_dict()` as JSON: exact (floats round-trip)  |
| split           | string | "train" / "val" / "test" / "" when unsplit                         |
| source          | string | where it came from, e.g. "cdvae:perov_5", "materials_project"      |

Every further column is a dataset property (e.g. `heat_ref`, `energy_per_atom`,
`formation_energy_per_atom`), stored with its own type. JSON rather than CIF keeps the
structure bit-exact (CIF rounds to 8 decimals and its parser snaps coordinates) and parses
about 8x faster.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pymatgen.core import DummySpecies, Element, Structure
from unimat_core.atomic import atomic_path

SCHEMA_VERSION = "1"

CORE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("formula", pa.string()),
        ("reduced_formula", pa.string()),
        ("chemsys", pa.string()),
        ("n_sites", pa.int32()),
        ("n_elements", pa.int32()),
        ("structure", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
    ]
)
CORE_COLUMNS = tuple(CORE_SCHEMA.names)


class StructureTableError(ValueError):
    """A table that does not follow the structure schema."""


def structure_to_json(structure: Structure) -> str:
    return json.dumps(structure.as_dict())


def structure_from_json(text: str) -> Structure:
    return Structure.from_dict(json.loads(text))


def read_structure_text(text: object) -> tuple[Structure | None, str]:
    """(structure, "") or (None, reason): a row reader that never raises, so one bad row names itself
    and the rest of the table goes on."""
    if text is None or (isinstance(text, float) and text != text) or (isinstance(text, str) and not text.strip()):
        return None, "no structure"
    try:
        return structure_from_json(str(text)), ""
    except Exception as exc:  # noqa: BLE001 - json and pymatgen raise many types for damaged text
        return None, f"unreadable structure: {type(exc).__name__}: {exc}"[:300]


def structure_problem(structure: Structure) -> str | None:
    """Why a structure cannot enter a table faithfully, or None.

    Isotopes: pymatgen reads a D (or T) site as an isotope of H and writes it back as plain H, so storing
    it would silently turn deuterium into hydrogen. Unknown symbols (e.g. "Qq") become dummy species that
    have no element. Both are rejected with this reason rather than changed."""
    if len(structure) == 0:
        return "no atom sites"
    isotopes, unknown = set(), set()
    for site in structure:
        for specie in site.species:
            element = getattr(specie, "element", specie)  # Species (with oxidation state) -> its Element
            if isinstance(specie, DummySpecies) or not isinstance(element, Element):
                unknown.add(str(specie))
            elif element.name != element.symbol:  # Element.D / Element.T, isotopes that print as H
                isotopes.add(element.name)
    if unknown:
        return f"unknown element(s) {', '.join(sorted(unknown))}"
    if isotopes:
        names = ", ".join(sorted(isotopes))
        return (f"isotope {names} of H: tables store elements, so {names} would silently become H; "
                "write H in the input to keep this structure")
    return None


def describe(structure: Structure) -> dict:
    """The derived core columns of one structure."""
    composition = structure.composition
    with warnings.catch_warnings():  # pymatgen warns about noble gases lacking electronegativities
        warnings.simplefilter("ignore", UserWarning)
        reduced = composition.reduced_formula
    return {
        "formula": composition.formula,
        "reduced_formula": reduced,
        "chemsys": composition.chemical_system,
        "n_sites": len(structure),
        "n_elements": len(composition.elements),
    }


def records_to_frame(
    structures: Sequence[Structure],
    ids: Sequence[str],
    *,
    split: str | Sequence[str] = "",
    source: str,
    properties: Mapping[str, Sequence] | None = None,
) -> pd.DataFrame:
    """Build a structure table from structures, ids and optional property columns."""
    if len(ids) != len(structures):
        raise StructureTableError(f"{len(ids)} ids for {len(structures)} structures")
    if len(set(ids)) != len(ids):
        raise StructureTableError("ids must be unique within a structure table")
    splits = [split] * len(structures) if isinstance(split, str) else list(split)
    rows = []
    for structure, structure_id, row_split in zip(structures, ids, splits):
        rows.append(
            {"id": str(structure_id), **describe(structure), "structure": structure_to_json(structure),
             "split": row_split, "source": source}
        )
    frame = conform(pd.DataFrame(rows, columns=list(CORE_COLUMNS)))
    for name, values in (properties or {}).items():
        if name in CORE_COLUMNS:
            raise StructureTableError(f"property {name!r} clashes with a core column")
        frame[name] = list(values)
    return frame


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast the core columns to the schema's dtypes (what reading the parquet back gives)."""
    return frame.astype({"n_sites": "int32", "n_elements": "int32"})


def validate_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in CORE_COLUMNS if c not in frame.columns]
    if missing:
        raise StructureTableError(f"structure table lacks core column(s) {missing}")
    if frame["id"].duplicated().any():
        dupes = frame.loc[frame["id"].duplicated(), "id"].head(5).tolist()
        raise StructureTableError(f"duplicate ids in structure table, e.g. {dupes}")


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table with the core schema first, properties after."""
    validate_frame(frame)
    property_columns = [c for c in frame.columns if c not in CORE_COLUMNS]
    core = pa.Table.from_pandas(frame[list(CORE_COLUMNS)], schema=CORE_SCHEMA, preserve_index=False)
    for name in property_columns:
        core = core.append_column(name, pa.Array.from_pandas(frame[name]))
    metadata = {b"unimat.structure_schema": SCHEMA_VERSION.encode()}
    return core.replace_schema_metadata({**(core.schema.metadata or {}), **metadata})


def write_structures(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically (temp file + rename), so a killed job never leaves half a file."""
    with atomic_path(path) as tmp:
        pq.write_table(to_arrow(frame), tmp, compression="zstd")
    return Path(path)


def read_structures(path: str | Path, *, columns: Iterable[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure table {path} does not exist")
    frame = pq.read_table(path, columns=list(columns) if columns else None).to_pandas()
    if columns is None:
        validate_frame(frame)
    return frame


def structures_of(frame: pd.DataFrame) -> list[Structure]:
    """Parse the `structure` column back into pymatgen Structures."""
    return [structure_from_json(text) for text in frame["structure"]]
