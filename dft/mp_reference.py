"""Reference hull from the Materials Project (mp-api), MP2020-corrected energies.

Needs `MP_API_KEY` (or an explicit key) and network; both missing give a clear `MPUnavailable`.
mp-api's compatible entries are on MP's corrected scale (`energy_scale` "mp2020", see
`dft.energy_scale`): candidates from a calculator on that scale (CHGNet) face them as they are, raw
GGA/GGA+U candidates (SevenNet-0) get MP2020 corrections first, and calculators on their own scale
(EMT, GPAW) are refused. The offline default is a same-calculator hull (`dft.reference_cache`).
Each entry's structure is kept (JSON) when mp-api returns one, for novelty checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from dft.energy_scale import MP2020_SCALE
from dft.hull import make_reference
from unimat_core.structure_table import structure_to_json


class MPUnavailable(RuntimeError):
    """No API key or no connection to the Materials Project."""


def reference_from_mp(chemical_systems: Iterable[str], *, api_key: str | None = None,
                      endpoint: str | None = None) -> pd.DataFrame:
    """All MP entries inside each chemical system ("Li-O", ...), MP2020 compatibility applied by mp-api."""
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise MPUnavailable("the Materials Project reference needs an API key: set MP_API_KEY "
                            "(https://next-gen.materialsproject.org/api) or use the offline default "
                            "(--reference offline: prototypes relaxed with the candidates' calculator)")
    from mp_api.client import MPRester

    systems = sorted({"-".join(sorted(s.split("-"))) for s in chemical_systems})
    rows: dict[str, tuple[str, float, str | None]] = {}
    try:
        with MPRester(api_key=key, endpoint=endpoint, mute_progress_bars=True) as rester:
            for chemsys in systems:
                for entry in rester.get_entries_in_chemsys(chemsys.split("-"), compatible_only=True):
                    structure = getattr(entry, "structure", None)
                    rows[str(entry.entry_id)] = (entry.composition.formula, float(entry.energy_per_atom),
                                                 structure_to_json(structure) if structure is not None else None)
    except MPUnavailable:
        raise
    except Exception as exc:  # network, auth, server errors: say where it failed
        raise MPUnavailable(f"Materials Project query failed for {systems}: {type(exc).__name__}: {exc}") from exc
    if not rows:
        raise MPUnavailable(f"the Materials Project returned no entries for {systems}")
    ids = list(rows)
    reference = make_reference(ids, [rows[i][0] for i in ids], [rows[i][1] for i in ids], "materials_project")
    reference["structure"] = [rows[i][2] for i in ids]
    reference["energy_scale"] = str(MP2020_SCALE)
    return reference
