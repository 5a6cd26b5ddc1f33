"""Reference hulls and candidate scoring: formation energy, energy above hull, decomposition energy.

A reference hull is a table (id, composition, energy_per_atom, source) stored as parquet, optionally
with the `energy_scale` its energies are on (`dft.energy_scale`), the crystal `structure` (JSON) and,
once put on the hull's scale, `raw_energy_per_atom` / `correction_per_atom`. Candidates are grouped by
chemical system; each system gets one pymatgen `PhaseDiagram` built from the reference entries whose
elements lie inside it, and systems are scored in parallel. Energies must already share one scale.

Definitions (per atom, eV):
- formation_energy_per_atom: against the reference's lowest elemental energies;
- decomposition_energy: the candidate's energy minus the reference hull energy at its
  composition (pymatgen's phase-separation energy for an entry outside the diagram): negative
  when the candidate is below the hull the other phases make, i.e. a new hull phase;
- e_above_hull: max(decomposition_energy, 0), the distance above the hull that includes it;
- stable: decomposition_energy <= 0; metastable: decomposition_energy <= 0.1 (`metastable_cutoff`).
Candidates whose elements are missing from the reference get NaN scores and `missing_elements`.
Only converged relaxations are scored (a `converged` column, when given, decides): an unconverged
energy is not a minimum, so its row gets NaN scores, no flags and the reason in `score_error`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

from dft.energy_scale import EnergyScale, ScaleMismatch
from unimat_core.atomic import atomic_path

REFERENCE_COLUMNS = ("id", "composition", "energy_per_atom", "source")
OPTIONAL_REFERENCE_COLUMNS = ("energy_scale", "structure", "raw_energy_per_atom", "correction_per_atom")
TOLERANCE = 1e-8


class HullError(ValueError):
    """A reference or candidate table that cannot be scored."""


def make_reference(ids: Iterable[str], compositions: Iterable[str], energies_per_atom: Iterable[float],
                   source: str | Iterable[str]) -> pd.DataFrame:
    ids, compositions, energies = list(ids), list(compositions), list(energies_per_atom)
    sources = [source] * len(ids) if isinstance(source, str) else list(source)
    frame = pd.DataFrame({"id": ids, "composition": compositions, "energy_per_atom": energies, "source": sources})
    return validate_reference(frame)


def validate_reference(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise HullError(f"reference table lacks column(s) {missing}; needs {list(REFERENCE_COLUMNS)}")
    frame = frame[[*REFERENCE_COLUMNS, *(c for c in OPTIONAL_REFERENCE_COLUMNS if c in frame.columns)]]
    frame = frame.reset_index(drop=True)
    energies = pd.to_numeric(frame["energy_per_atom"], errors="coerce").astype(float)
    bad = [(i, f"energy_per_atom {frame.at[i, 'energy_per_atom']!r} is not a finite number")
           for i in np.flatnonzero(~np.isfinite(energies))]
    bad += [(i, problem) for i, c in enumerate(frame["composition"]) if (problem := _composition_problem(c))]
    if bad:  # rows counted from 1, as a user counts the data rows of a table
        raise HullError("non-finite or unreadable reference rows: " + "; ".join(
            f"row {i + 1} (id {frame.at[i, 'id']!r}): {why}" for i, why in sorted(bad)[:3])
            + (f"; and {len(bad) - 3} more" if len(bad) > 3 else ""))
    frame = frame.assign(energy_per_atom=energies, id=frame["id"].astype(str))
    return frame


def _composition_problem(composition: object) -> str | None:
    """Why a reference composition cannot be placed on a hull (unparseable, unknown element), or None."""
    try:
        elements = Composition(str(composition)).elements
    except Exception:  # noqa: BLE001 - pymatgen raises several types for bad formulas
        return f"composition {composition!r} is not a chemical formula"
    unknown = [getattr(e, "symbol", str(e)) for e in elements if not isinstance(e, Element)]
    return f"composition {composition!r} has unknown element(s) {', '.join(unknown)}" if unknown else None


def write_reference(frame: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        validate_reference(frame).to_parquet(tmp, index=False)
    return Path(path)


def read_reference(path: str | Path) -> pd.DataFrame:
    """A user-supplied reference: parquet or CSV with id, composition, energy_per_atom, source, energy_scale."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference hull {path} does not exist")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() in (".csv", ".gz") else pd.read_parquet(path)
        reference = validate_reference(frame)
    except (HullError, ValueError, OSError, UnicodeDecodeError) as exc:  # name the file: the user has to fix it
        raise HullError(f"{path}: {exc}") from exc
    if len(reference):  # a file must say what scale its energies are on (an empty hull holds none to misplace)
        reference_scale(reference, str(path))
    return reference

def reference_scale(reference: pd.DataFrame, where: str = "the reference") -> EnergyScale:
    """The one energy scale of a reference table's `energy_scale` column (clear error when absent or mixed)."""
    if "energy_scale" not in reference.columns:
        raise ScaleMismatch(
            f"{where} does not say which energy scale its energies are on: add an `energy_scale` column with "
            "'mp2020' (MP2020-corrected, e.g. mp-api entries or CHGNet), 'gga_raw' (uncorrected PBE/PBE+U with "
            "MP's settings, e.g. SevenNet-0) or 'own:<label>' (a calculator's own scale; the label must be the "
            "one dft.calculators.energy_scale gives the candidates' calculator, e.g. 'own:emt')")
    scales = sorted({str(v) for v in reference["energy_scale"]})
    if len(scales) != 1:
        raise ScaleMismatch(f"{where} mixes energy scales {scales}; one hull needs one scale")
    return EnergyScale.parse(scales[0])


def reference_from_relaxed(relaxed: pd.DataFrame, elemental: pd.DataFrame | None = None, *,
                           converged_only: bool = True, scale: EnergyScale | None = None) -> pd.DataFrame:
    """Reference from relaxed structure tables (dft.batch output) made with one calculator.

    Keeps each crystal's structure (for MP2020's oxide-type detection and for novelty checks) and, when
    given, the calculator's energy `scale`."""
    frames = [relaxed] + ([elemental] if elemental is not None else [])
    table = pd.concat(frames, ignore_index=True)
    keep = np.isfinite(table["energy_per_atom"].astype(float))
    if converged_only:
        keep &= table["converged"].astype(bool)
    table = table[keep]
    calculators = set(table["calculator"])
    if len(calculators) > 1:
        raise HullError(f"reference mixes calculators {sorted(calculators)}; energies must share one")
    reference = make_reference(table["id"], table["formula"], table["energy_per_atom"],
                               [f"relaxed:{c}" for c in table["calculator"]])
    if "structure" in table.columns:
        reference["structure"] = table["structure"].to_numpy()
    if scale is not None:
        reference["energy_scale"] = str(scale)
    return reference


def _entries(reference: pd.DataFrame) -> list[PDEntry]:
    entries = []
    for rid, comp, epa in zip(reference["id"], reference["composition"], reference["energy_per_atom"]):
        composition = Composition(comp)
        entries.append(PDEntry(composition, epa * composition.num_atoms, name=rid, attribute=rid))
    return entries


def _score_system(chemsys: str, candidates: pd.DataFrame, entries: list[PDEntry],
                  metastable_cutoff: float) -> list[dict]:
    elements = set(chemsys.split("-"))
    missing = sorted(elements - present_elementals(entries))
    rows = []
    if missing:
        for cid in candidates["id"]:
            rows.append({"id": cid, "missing_elements": ",".join(missing)})
        return rows
    diagram = PhaseDiagram([e for e in entries if {str(x) for x in e.composition.elements} <= elements])
    for cid, comp, epa in zip(candidates["id"], candidates["composition"], candidates["energy_per_atom"]):
        composition = Composition(comp)
        entry = PDEntry(composition, float(epa) * composition.num_atoms, name=cid)
        hull_energy = diagram.get_hull_energy_per_atom(composition)
        decomposition = float(epa) - hull_energy
        rows.append({
            "id": cid,
            "formation_energy_per_atom": float(diagram.get_form_energy_per_atom(entry)),
            "decomposition_energy": decomposition,
            "e_above_hull": max(decomposition, 0.0),
            "stable": bool(decomposition <= TOLERANCE),
            "metastable": bool(decomposition <= metastable_cutoff + TOLERANCE),
            "missing_elements": "",
        })
    return rows


def present_elementals(entries: list[PDEntry]) -> set[str]:
    """Elements that have an elemental reference entry (needed for a phase diagram)."""
    return {str(e.composition.elements[0]) for e in entries if len(e.composition.elements) == 1}


def score_candidates(candidates: pd.DataFrame, reference: pd.DataFrame, *, metastable_cutoff: float = 0.1,
                     n_workers: int = 1) -> pd.DataFrame:
    """Score candidates (columns id, composition or formula, energy_per_atom) against a reference."""
    reference = validate_reference(reference)
    cand = candidates.copy()
    if "composition" not in cand.columns:
        if "formula" not in cand.columns:
            raise HullError("candidates need a 'composition' or 'formula' column")
        cand["composition"] = cand["formula"]
    cand["id"] = cand["id"].astype(str)
    energy_ok = np.isfinite(cand["energy_per_atom"].astype(float))
    converged = cand["converged"].astype(bool) if "converged" in cand.columns else pd.Series(True, index=cand.index)
    finite = energy_ok & converged
    cand["chemsys"] = [Composition(c).chemical_system for c in cand["composition"]]
    ref_elements = [frozenset(str(el) for el in Composition(c).elements) for c in reference["composition"]]
    all_entries = _entries(reference)

    jobs = []
    for chemsys, group in cand[finite].groupby("chemsys", sort=False):
        elements = set(chemsys.split("-"))
        entries = [e for e, els in zip(all_entries, ref_elements) if els <= elements]
        jobs.append((chemsys, group[["id", "composition", "energy_per_atom"]], entries, metastable_cutoff))
    if n_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(n_workers, os.cpu_count() or 1)) as pool:
            results = list(pool.map(_score_system_args, jobs, chunksize=max(1, len(jobs) // (4 * n_workers))))
    else:
        results = [_score_system(*job) for job in jobs]
    scored = pd.DataFrame([row for rows in results for row in rows])
    columns = ["formation_energy_per_atom", "decomposition_energy", "e_above_hull", "stable", "metastable",
               "missing_elements"]
    scored = scored.reindex(columns=["id", *columns])  # every column, even when no system could be scored
    out = cand[["id", "composition", "chemsys", "energy_per_atom"]].merge(scored, on="id", how="left")
    out.loc[~finite.values, "missing_elements"] = ""
    why_not = [("no finite energy" if not ok else
                f"relaxation not converged ({err})" if err else "relaxation not converged")
               for ok, err in zip(energy_ok, cand["error"].fillna("") if "error" in cand.columns else [""] * len(cand))]
    out["score_error"] = np.where(~finite.values, why_not, "")
    out["stable"] = out["stable"].eq(True)
    out["metastable"] = out["metastable"].eq(True)
    out["missing_elements"] = out["missing_elements"].fillna("")
    return out


def _score_system_args(job: tuple) -> list[dict]:
    return _score_system(*job)


def sun_summary(scores: pd.DataFrame, *, unique: pd.Series | None = None, novel: pd.Series | None = None,
                use_metastable: bool = False) -> dict:
    """Stable / unique / novel counts and rates over all candidates (rates divide by every candidate).

    `unique` and `novel` are boolean Series indexed like `scores` (from the evaluation stage);
    when absent they count as all-True and the summary says so in `uniqueness_known`/`novelty_known`.
    A candidate whose relaxation did not converge (`relax_converged` False) is never stable; the
    summary counts them in `n_not_converged`.
    """
    total = len(scores)
    converged = (scores["relax_converged"].astype(bool).to_numpy() if "relax_converged" in scores.columns
                 else np.ones(total, bool))
    stable = scores["metastable" if use_metastable else "stable"].astype(bool).to_numpy() & converged
    uniq = np.ones(total, bool) if unique is None else unique.astype(bool).to_numpy()
    nov = np.ones(total, bool) if novel is None else novel.astype(bool).to_numpy()
    sun = stable & uniq & nov
    rate = (lambda n: n / total if total else float("nan"))
    return {
        "n_candidates": total, "n_not_converged": int((~converged).sum()),
        "n_scored": int(np.isfinite(scores["decomposition_energy"].astype(float)).sum())
        if "decomposition_energy" in scores.columns else total,
        "n_stable": int(stable.sum()), "n_unique": int(uniq.sum()),
        "n_novel": int(nov.sum()), "n_sun": int(sun.sum()), "stable_rate": rate(stable.sum()),
        "unique_rate": rate(uniq.sum()), "novel_rate": rate(nov.sum()), "sun_rate": rate(sun.sum()),
        "stability_criterion": "metastable (<= cutoff)" if use_metastable else "stable (<= 0 eV/atom)",
        "uniqueness_known": unique is not None, "novelty_known": novel is not None,
    }


def element_symbols(chemsys: str) -> list[str]:
    return [str(Element(s)) for s in chemsys.split("-")]
