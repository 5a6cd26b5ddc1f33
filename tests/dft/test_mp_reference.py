"""The MP reference. The Materials Project web service cannot exist here, so its client is
replaced by a stand-in that serves real MP entries: the bundled 2023-02-07 MP elemental
ComputedEntry dicts (unimat_core/data/reference)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pymatgen.entries.computed_entries import ComputedEntry

import dft.mp_reference as mp_reference
from dft.mp_reference import MPUnavailable, reference_from_mp

REFERENCE = (Path(__file__).resolve().parents[2] / "unimat_core/data/reference/"
             "2023-02-07-mp-elemental-reference-entries.json.gz")


class StandInRester:
    """Stands in for mp_api.client.MPRester (no network here): serves the bundled MP entries."""

    calls: list = []

    def __init__(self, api_key=None, endpoint=None, **_):
        self.api_key = api_key

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_entries_in_chemsys(self, elements, compatible_only=True):
        StandInRester.calls.append((tuple(elements), compatible_only))
        data = json.loads(gzip.open(REFERENCE).read())
        entries = [ComputedEntry.from_dict(d) for d in data.values()]
        return [e for e in entries if {str(el) for el in e.composition.elements} <= set(elements)]


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(MPUnavailable, match="MP_API_KEY"):
        reference_from_mp(["Li-O"])


def test_entries_become_a_reference(monkeypatch):
    import mp_api.client

    monkeypatch.setattr(mp_api.client, "MPRester", StandInRester)
    StandInRester.calls = []
    ref = reference_from_mp(["O-Li", "Li-O"], api_key="test-key")
    assert StandInRester.calls == [(("Li", "O"), True)]  # deduplicated, MP2020 compatibility asked for
    assert sorted(ref["composition"].map(lambda c: c.split()[0].rstrip("0123456789"))) == ["Li", "O"]
    assert set(ref["source"]) == {"materials_project"}
    assert ref["energy_per_atom"].between(-10, -1).all()
    assert set(ref["energy_scale"]) == {"mp2020"}  # mp-api's compatible entries: MP2020 already applied
    assert ref["structure"].isna().all()  # these stand-in entries carry no structure


def test_server_failure_is_wrapped(monkeypatch):
    import mp_api.client

    class Broken(StandInRester):
        def get_entries_in_chemsys(self, elements, compatible_only=True):
            raise ConnectionError("no route to api.materialsproject.org")

    monkeypatch.setattr(mp_api.client, "MPRester", Broken)
    with pytest.raises(MPUnavailable, match="no route"):
        mp_reference.reference_from_mp(["Li-O"], api_key="k")
