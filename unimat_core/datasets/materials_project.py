"""MP-20-style data from the Materials Project through `mp-api`.

MP-20 (CDVAE) criteria: at most 20 sites, energy above hull <= 0.08 eV/atom, formation energy
< 2 eV/atom, experimentally observed (ICSD-derived; `theoretical=False` in the API). The split
is a seeded hash of the material id (`hashed_split`), reproducible across queries.

This source needs an API key (`MP_API_KEY`) and network access to the Materials Project. Both
are checked first, and each missing one gives a `MaterialsProjectError` that says how to fix it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

import pandas as pd

from unimat_core.datasets.cdvae_csv import REJECTED_COLUMNS, LoadResult
from unimat_core.datasets.splits import hashed_split
from unimat_core.structure_table import records_to_frame, structure_problem

DEFAULT_ENDPOINT = "https://api.materialsproject.org"
SUMMARY_FIELDS = (
    "material_id",
    "structure",
    "formation_energy_per_atom",
    "energy_above_hull",
    "band_gap",
    "formula_pretty",
    "symmetry",
)


class MaterialsProjectError(RuntimeError):
    """The Materials Project cannot be queried here; the message says what is missing."""


@dataclass(frozen=True)
class MP20Query:
    """What to fetch; the defaults reproduce the MP-20 selection."""

    max_sites: int = 20
    max_energy_above_hull: float = 0.08
    max_formation_energy: float = 2.0
    experimental_only: bool = True
    chemsys: tuple[str, ...] = ()
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: str = "mp20"
    endpoint: str = DEFAULT_ENDPOINT
    connect_timeout_s: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    def search_criteria(self) -> dict[str, Any]:
        criteria: dict[str, Any] = {
            "num_sites": (1, self.max_sites),
            "energy_above_hull": (0.0, self.max_energy_above_hull),
            "formation_energy": (None, self.max_formation_energy),
        }
        if self.experimental_only:
            criteria["theoretical"] = False
        if self.chemsys:
            criteria["chemsys"] = list(self.chemsys)
        return {**criteria, **self.extra}

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MP20Query:
        data = dict(data)
        for key in ("chemsys", "split_fractions"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class SummarySearch(Protocol):
    """The one call we need from the MP client: summary documents as dicts."""

    def __call__(self, criteria: dict[str, Any], fields: tuple[str, ...]) -> list[dict]: ...


def _mp_api_search(api_key: str, endpoint: str) -> SummarySearch:
    try:
        from mp_api.client import MPRester
    except ImportError as exc:  # pragma: no cover - mp-api is a core dependency
        raise MaterialsProjectError("the Materials Project source needs `mp-api`: pip install mp-api") from exc

    def search(criteria: dict[str, Any], fields: tuple[str, ...]) -> list[dict]:
        with MPRester(api_key=api_key, endpoint=endpoint, use_document_model=False, mute_progress_bars=True) as mpr:
            return mpr.materials.summary.search(fields=list(fields), **criteria)

    return search


def require_api_key(api_key: str | None = None) -> str:
    key = api_key or os.environ.get("MP_API_KEY", "")
    if not key:
        raise MaterialsProjectError(
            "MP_API_KEY is not set: the Materials Project source needs an API key. Get one at "
            "https://next-gen.materialsproject.org/api and run `export MP_API_KEY=<your key>`, "
            "or use an offline source (--source perov_5 | carbon_24 | PATH.csv)."
        )
    return key


def require_network(endpoint: str, timeout_s: float) -> None:
    url = urlparse(endpoint)
    host = url.hostname or endpoint
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise MaterialsProjectError(
            f"cannot reach the Materials Project at {host}:{port} ({exc}): this source needs network "
            "access. Run where the API is reachable, or use an offline source "
            "(--source perov_5 | carbon_24 | PATH.csv)."
        ) from exc


def _structure_of(doc: dict):
    from pymatgen.core import Structure

    structure = doc["structure"]
    return structure if isinstance(structure, Structure) else Structure.from_dict(structure)


def fetch_materials_project(
    query: MP20Query = MP20Query(),
    *,
    api_key: str | None = None,
    search: SummarySearch | None = None,
    check_network: bool = True,
    search_factory: Callable[[str, str], SummarySearch] = _mp_api_search,
) -> LoadResult:
    """Query MP and return an MP-20-style structure table with a reproducible split.

    `search` replaces the web client (tests use a stand-in for the MP service, which cannot
    exist offline); the key and network checks still run unless `check_network` is False.
    """
    key = require_api_key(api_key)
    if check_network:
        require_network(query.endpoint, query.connect_timeout_s)
    search = search or search_factory(key, query.endpoint)
    docs = search(query.search_criteria(), SUMMARY_FIELDS)

    kept, rejected = [], []
    for doc in docs:
        material_id = str(doc.get("material_id", ""))
        try:
            structure = _structure_of(doc)
        except Exception as exc:
            rejected.append((material_id, f"structure does not parse: {exc}", str(doc.get("structure"))))
            continue
        problem = structure_problem(structure)
        if problem:
            rejected.append((material_id, problem, str(doc.get("structure"))))
            continue
        e_form = doc.get("formation_energy_per_atom")
        if len(structure) > query.max_sites or (e_form is not None and e_form >= query.max_formation_energy):
            continue  # outside MP-20 even if the server's filter let it through
        kept.append((material_id, structure, doc))

    ids = [k[0] for k in kept]
    splits = hashed_split(ids, query.split_fractions, query.split_seed)

    def prop(name: str) -> list:
        return [k[2].get(name) for k in kept]

    def spacegroup(doc: dict) -> int | None:
        symmetry = doc.get("symmetry") or {}
        return symmetry.get("number") if isinstance(symmetry, dict) else getattr(symmetry, "number", None)

    properties = {
        "formation_energy_per_atom": pd.array(prop("formation_energy_per_atom"), dtype="Float64"),
        "e_above_hull": pd.array(prop("energy_above_hull"), dtype="Float64"),
        "band_gap": pd.array(prop("band_gap"), dtype="Float64"),
        "spacegroup_number": pd.array([spacegroup(k[2]) for k in kept], dtype="Int64"),
    }
    table = records_to_frame([k[1] for k in kept], ids, split=splits, source="materials_project", properties=properties)
    rejected_frame = pd.DataFrame(
        [(i, "", "materials_project", reason, raw) for i, reason, raw in rejected], columns=list(REJECTED_COLUMNS)
    )
    return LoadResult(table, rejected_frame)
