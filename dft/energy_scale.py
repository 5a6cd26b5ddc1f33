"""Energy scales: which energies may share one hull, and the MP2020 corrections that put raw GGA on MP's.

Every energy on a hull must be on one scale, or decomposition energies are off by an amount that
depends on the composition (a SevenNet-0 oxide against MP's corrected hull: about 0.69 eV per O atom).
Three kinds of scale:

- ``mp2020``: the Materials Project's corrected scale (PBE/PBE+U mixed by MP's rules, MP2020 anion
  and U corrections applied): MP's own compatible entries (mp-api), and CHGNet, which was trained on
  MPtrj's corrected energies (relaxed MgO: E_f -3.04 eV/atom against MP's elements; MP: -3.05).
- ``gga_raw``: uncorrected PBE / PBE+U energies with MP's input-set settings: SevenNet-0 (trained on
  MPtrj's raw energies: MgO E_f -2.70). `MaterialsProject2020Compatibility`, given each entry's
  GGA/GGA+U parameters by MP's rules, puts them on ``mp2020``.
- ``own``: a calculator's own scale (EMT, GPAW, VASP/QE with user settings), comparable only with
  energies of the same calculator and settings, i.e. the same ``label``.

The rule (`plan_scales`): every ``gga_raw`` side is corrected to ``mp2020`` before it goes on a hull,
then both sides must be on the same scale; any other pair is refused with the reason. A raw-GGA
calculator scored against its own reference is corrected on both sides too: its GGA+U energies of
transition-metal oxides/fluorides and its GGA energies of the metals only become comparable through
MP2020's mixing corrections, and for two energies of one composition the corrections are the same and
cancel. ``mp2020`` energies (CHGNet, MP) are never corrected again (that would count the corrections
twice: CHGNet MgO would drop to -3.38 eV/atom).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

ScaleKind = Literal["mp2020", "gga_raw", "own"]
KINDS: tuple[str, ...] = ("mp2020", "gga_raw", "own")


class ScaleMismatch(ValueError):
    """Two energy scales that no correction relates, or an entry MP2020 cannot correct."""


@dataclass(frozen=True)
class EnergyScale:
    """The scale of a set of energies; `label` names who made them (only `own` scales compare it)."""

    kind: ScaleKind
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ScaleMismatch(f"unknown energy scale {self.kind!r}; known: {list(KINDS)}")
        if self.kind == "own" and not self.label:
            raise ScaleMismatch("an 'own' energy scale needs a label naming the calculator and its settings")

    def __str__(self) -> str:
        return f"own:{self.label}" if self.kind == "own" else self.kind

    @classmethod
    def parse(cls, text: str) -> EnergyScale:
        """'mp2020', 'gga_raw' or 'own:<label>' (the form `str` writes into tables)."""
        text = str(text).strip()
        if text.startswith("own:"):
            return cls("own", text[4:])
        if text in ("mp2020", "gga_raw"):
            return cls(text)  # type: ignore[arg-type]
        raise ScaleMismatch(f"energy scale {text!r} is not 'mp2020', 'gga_raw' or 'own:<calculator label>'")


MP2020_SCALE = EnergyScale("mp2020")


@dataclass(frozen=True)
class ScalePlan:
    """Which side gets MP2020 corrections, and the scale every hull energy ends up on."""

    correct_candidates: bool
    correct_reference: bool
    hull_scale: EnergyScale
    note: str


def plan_scales(candidates: EnergyScale, reference: EnergyScale) -> ScalePlan:
    """How to put candidates and reference on one scale, or `ScaleMismatch` saying why there is no way."""
    fix_c, fix_r = candidates.kind == "gga_raw", reference.kind == "gga_raw"
    cand = MP2020_SCALE if fix_c else candidates
    ref = MP2020_SCALE if fix_r else reference
    if cand != ref:
        hint = ("score against an offline reference relaxed with the same calculator (--reference offline)"
                if "own" in (candidates.kind, reference.kind) else "use a reference on the candidates' scale")
        raise ScaleMismatch(f"candidates on energy scale {candidates} and reference on {reference}: no correction "
                            f"relates the two, so their decomposition energies would be meaningless; {hint}")
    corrected = [side for side, fix in (("candidates", fix_c), ("reference", fix_r)) if fix]
    note = (f"MP2020 corrections applied to the {' and '.join(corrected)} (raw GGA/GGA+U -> {MP2020_SCALE})"
            if corrected else f"no corrections: both on {cand}")
    return ScalePlan(fix_c, fix_r, cand, note)


@lru_cache(maxsize=1)
def _compatibility():
    from pymatgen.analysis.compatibility import MaterialsProject2020Compatibility

    # No POTCARs to check: the energies come from a calculator that emulates MP's input set.
    return MaterialsProject2020Compatibility(check_potcar=False)


@lru_cache(maxsize=1)
def _u_values() -> dict[str, dict[str, float]]:
    from pymatgen.io.vasp.sets import MPRelaxSet

    return MPRelaxSet.CONFIG["INCAR"]["LDAUU"]  # {anion: {metal: U}}, keyed by the most electronegative element


def mp_parameters(composition: Composition) -> dict:
    """MP's run parameters for a composition: GGA+U with MP's U values when the most electronegative
    element is O or F and a U metal is present (MPRelaxSet's rule), plain GGA otherwise."""
    elements = sorted(composition.elements, key=lambda el: el.X)
    anion = elements[-1].symbol if elements else ""
    hubbards = {el.symbol: float(u) for el in elements
                if (u := _u_values().get(anion, {}).get(el.symbol, 0.0))} if len(elements) > 1 else {}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards)}


def mp2020_corrections(compositions: Sequence[str], energies_per_atom: Sequence[float],
                       structures: Sequence[Structure | None] | None = None,
                       ids: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """MP2020 correction (eV/atom) of each raw GGA/GGA+U energy, via `ComputedStructureEntry` when a
    structure is given (oxide / peroxide / superoxide told apart by O-O distances), else `ComputedEntry`.

    Returns the corrections and `{id: reason}` for entries MP2020 rejects (their correction is NaN):
    the caller reports them instead of losing the batch, and must not use them uncorrected.
    """
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    ids = list(ids) if ids is not None else [str(i) for i in range(len(compositions))]
    structures = list(structures) if structures is not None else [None] * len(compositions)
    compat = _compatibility()
    out = np.full(len(compositions), np.nan)
    errors: dict[str, str] = {}
    for i, (rid, formula, epa, structure) in enumerate(zip(ids, compositions, energies_per_atom, structures)):
        composition = Composition(formula) if structure is None else structure.composition
        energy = float(epa) * composition.num_atoms
        parameters = mp_parameters(composition)
        entry = (ComputedStructureEntry(structure, energy, parameters=parameters, entry_id=rid) if structure is not None
                 else ComputedEntry(composition, energy, parameters=parameters, entry_id=rid))
        with warnings.catch_warnings():  # oxidation-state guesses warn on exotic compositions; the result is checked
            warnings.simplefilter("ignore")
            try:
                processed = compat.process_entry(entry, on_error="raise")
            except Exception as exc:  # noqa: BLE001 - CompatibilityError and friends: recorded with the row
                errors[rid] = (f"MP2020 corrections failed for {composition.reduced_formula}: "
                               f"{type(exc).__name__}: {exc}")
                continue
        if processed is None:
            errors[rid] = f"MP2020 compatibility rejected {composition.reduced_formula}"
            continue
        out[i] = processed.correction / composition.num_atoms
    return out, errors


def on_hull_scale(frame: pd.DataFrame, correct: bool) -> tuple[pd.DataFrame, dict[str, str]]:
    """`frame` (id, composition, energy_per_atom, optional structure JSON) with its energies on the hull scale.

    The calculator's number moves to `raw_energy_per_atom`, the applied `correction_per_atom` is kept
    (0 when none), and rows MP2020 rejects get a NaN energy and are returned as `{id: reason}`.
    """
    out = frame.copy()
    raw = out["energy_per_atom"].astype(float).to_numpy()
    out["raw_energy_per_atom"] = raw
    out["correction_per_atom"] = 0.0
    if not correct:
        return out, {}
    todo = np.flatnonzero(np.isfinite(raw))
    structures = None
    if "structure" in out.columns:
        structures = [_structure(out["structure"].iloc[i]) for i in todo]
    corrections, errors = mp2020_corrections(out["composition"].iloc[todo].tolist(), raw[todo], structures,
                                             out["id"].astype(str).iloc[todo].tolist())
    correction = np.zeros(len(out))
    correction[todo] = corrections
    out["correction_per_atom"] = correction
    out["energy_per_atom"] = raw + correction
    return out, errors


def _structure(value) -> Structure | None:
    if isinstance(value, Structure):
        return value
    if isinstance(value, str) and value:
        return Structure.from_dict(json.loads(value))
    return None
