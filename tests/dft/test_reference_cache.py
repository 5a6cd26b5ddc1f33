"""The prototype cache with EMT (fast, real): relaxed once per system, reused, never stale."""

from __future__ import annotations

import json

import pytest

import dft.prototypes as prototypes
from dft.calculators import CalculatorConfig
from dft.reference_cache import ReferenceCache, StaleCache, canonical_system, system_jobs
from dft.relax import RelaxConfig

EMT = CalculatorConfig("emt")
RELAX = RelaxConfig(fmax=0.05, max_steps=200, time_limit_s=30)
FEW = ("cscl", "l12")  # 1 + 2 decorations per pair keep the test short


def test_jobs_name_every_structure_and_keep_dimers_cell_fixed():
    assert canonical_system("O-Co") == "Co-O"
    oxygen = {job.prototype: job for job in system_jobs("O")}
    assert oxygen["dimer"].id == "elemental:O:dimer" and not oxygen["dimer"].relax_cell
    pair = [job.id for job in system_jobs("Cu-Au", FEW)]
    assert pair == ["prototype:Au-Cu:cscl:Au-Cu", "prototype:Au-Cu:l12:Au-Cu", "prototype:Au-Cu:l12:Cu-Au"]
    with pytest.raises(ValueError, match="single elements or pairs"):
        system_jobs("Cu-Au-Ag")


def test_systems_are_relaxed_once_and_reused(tmp_path):
    cache = ReferenceCache(tmp_path, EMT, RELAX, FEW)
    first = cache.ensure(["Cu", "Au", "Au-Cu"])
    assert first == {"n_systems": 3, "n_reused": 0, "n_relaxed": 5 + 5 + 3, "seconds": first["seconds"]}
    rows = cache.read(["Cu-Au", "Cu"])
    assert sorted(rows["system"].unique()) == ["Au-Cu", "Cu"] and rows["converged"].all()
    assert set(rows["calculator"]) == {"emt"} and rows["input_sha"].str.len().eq(20).all()
    mtime = cache.path("Au-Cu").stat().st_mtime_ns

    again = ReferenceCache(tmp_path, EMT, RELAX, FEW).ensure(["Au-Cu", "Cu"])  # another campaign, same settings
    assert (again["n_reused"], again["n_relaxed"]) == (2, 0) and cache.path("Au-Cu").stat().st_mtime_ns == mtime
    settings = json.loads((cache.folder / "settings.json").read_text())
    assert settings["calculator"]["name"] == "emt" and settings["relax"]["fmax"] == 0.05
    assert settings["calculator"]["version"]  # the package version is part of the key

    # other relaxation settings: another folder, nothing shared
    stricter = ReferenceCache(tmp_path, EMT, RelaxConfig(fmax=0.02, max_steps=200, time_limit_s=30), FEW)
    assert stricter.folder != cache.folder and not stricter.fresh("Cu")
    with pytest.raises(StaleCache, match=r"no fresh cached relaxations for \['Cu'\]"):
        stricter.read(["Cu"])


def test_a_changed_prototype_is_recomputed_not_returned_stale(tmp_path, monkeypatch):
    cache = ReferenceCache(tmp_path, EMT, RELAX, ("cscl",))
    cache.ensure(["Au-Cu"])
    before = cache.read(["Au-Cu"])["input_sha"].tolist()
    moved = prototypes.Prototype("cscl", "Pm-3m", ("cubic", 1, 1), ((0, 0, 0),), ((0.5, 0.5, 0.45),), symmetric=True)
    monkeypatch.setitem(prototypes.BINARY_PROTOTYPES, "cscl", moved)
    assert not cache.fresh("Au-Cu")
    assert cache.ensure(["Au-Cu"])["n_relaxed"] == 1
    assert cache.read(["Au-Cu"])["input_sha"].tolist() != before


def test_a_tampered_settings_file_is_refused(tmp_path):
    cache = ReferenceCache(tmp_path, EMT, RELAX, ("cscl",))
    cache.ensure(["Cu"])
    (cache.folder / "settings.json").write_text(json.dumps({"calculator": "something else"}))
    with pytest.raises(StaleCache, match="does not match the settings its folder name hashes"):
        ReferenceCache(tmp_path, EMT, RELAX, ("cscl",)).ensure(["Au"])
