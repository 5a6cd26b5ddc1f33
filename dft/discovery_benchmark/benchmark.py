"""The benchmark's steps as plain functions (targets, candidates, relaxation plan and chunks, scoring); the
folder layout and the budget and timing rules are in the package docstring (dft/discovery_benchmark)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymatgen.core import Composition

from dft.batch import finished_ids, part_files, plan_chunks, read_relaxed, relax_ids
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from dft.discovery_benchmark import report
from dft.discovery_benchmark.reference_phases import reference_table, target_element
from unimat_core.datasets.bundled import BUNDLED_DATASETS, bundled_csv_paths
from unimat_core.datasets.cdvae_csv import parse_cif
from unimat_core.metrics.validity import structure_validity
from unimat_core.model.config import GenerateConfig
from dft.discovery_benchmark.random_search import CANDIDATE_EXTRA, RandomStructureConfig, random_candidates
from unimat_core.settings import option
from unimat_core import atomic
from unimat_core.structure_table import (
    CORE_COLUMNS,
    conform,
    read_structures,
    structure_from_json,
    write_structures,
)

METHODS = ("unimat", "random")
SETS = ("known", *METHODS)  # the relaxation sets of reference "known"; "elemental" relaxes "reference" instead of "known"
SUSPECT_BELOW_KNOWN = 0.100  # eV/atom below the known structure: flagged in the report for inspection


class DiscoverySettingsMismatch(ValueError):
    """The discovery folder was made with other settings: resuming would mix two benchmarks."""


# ---------------------------------------------------------------- layout and settings


def compact_formula(formula: str) -> str:
    """A full cell formula without spaces, e.g. "Sr1 Ti1 O3" -> "Sr1Ti1O3" (clear error when it is no formula)."""
    try:
        composition = Composition(formula)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise ValueError(f"{formula!r} is not a chemical formula: {exc}") from exc
    if len(composition) == 0:
        raise ValueError(f"{formula!r} has no elements")
    return composition.formula.replace(" ", "")


def check_settings(folder: Path, settings: dict) -> None:
    """Record `settings` in a new folder; refuse to resume a folder made with different ones."""
    path = folder / "settings.json"
    wanted = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if path.exists():
        stored = json.loads(path.read_text())
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        if changed:
            raise DiscoverySettingsMismatch(
                f"{folder} was made with different settings ({', '.join(changed)}); use another campaign name or "
                f"delete the folder to start over")
        return
    atomic.write_text(path, json.dumps(wanted, indent=2, sort_keys=True))


class DiscoveryParams(BaseModel):
    """What to compare. Defaults: 20 perov_5 test compositions unseen in the bundled val split, K = 20.
    How UniMat samples (sampler, steps, guidance, batch size, seed, device) is the generate stage's
    `GenerateParams`; the seed also draws the targets and the random cells."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(default=None, description="model checkpoint (default: "
                                   "<campaign>/train/checkpoints/last.pt)")
    compositions: tuple[str, ...] = Field(default=(), description="comma-separated cell formulas (default: draw "
                                          "--n-compositions from the known structures)")
    n_compositions: int = Field(default=20, ge=1, description="compositions to draw")
    known: str = Field(default="perov_5", description="perov_5 (its test split) or a structure-table parquet of known "
                       "structures")
    unseen_only: bool = option("--include-seen", "draw only compositions absent from the other bundled splits (the "
                               "model's data)", default=True)
    reference: Literal["known", "elemental"] = Field(
        default="known", description="what a target's energy is measured against: known = its lowest relaxed known "
        "structure; elemental = the lowest relaxed reference phase of its element (carbon: diamond, graphite), for "
        "one-element datasets such as carbon_24, whose targets are then cell formulas (C6, C8, ...) and whose known "
        "structures are only matched, not relaxed")
    relaxations_per_composition: int = option("--k", "candidates (relaxations) per composition and method", default=20,
                                              ge=1)
    oversample: int = Field(default=1, ge=1, le=100, description="UniMat samples drawn per candidate: the first K "
                            "usable ones (right composition, atoms >= 0.5 A apart) are relaxed, as random search "
                            "rejects cells that break its distance rule; generation time of all is charged")
    # the random search's own defaults (RandomStructureConfig), not copies of them
    min_distance_factor: float = Field(default=RandomStructureConfig.model_fields["min_distance_factor"].default, gt=0,
                                       description="random search: d_ij >= factor * (r_i + r_j)")
    packing_fraction: float = Field(default=RandomStructureConfig.model_fields["packing_fraction"].default, gt=0,
                                    description="random search: atom volume / cell volume")
    tolerance: float = Field(default=0.010, gt=0, description="eV/atom above the known energy that counts as reached")
    # a time- or step-limited relaxation of a collapsed cell can report an energy eV/atom below the true ground
    # state (a calculator artefact, not a discovery)
    converged_only: bool = option("--all-energies", "score converged relaxations only (also score unconverged "
                                  "ones when turned off)", default=True)

    @field_validator("compositions")
    @classmethod
    def _formulas(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(compact_formula(f) for f in value)

    def random_config(self) -> RandomStructureConfig:
        return RandomStructureConfig(packing_fraction=self.packing_fraction,
                                     min_distance_factor=self.min_distance_factor)


# GenerateConfig fields the benchmark decides itself (the model, its targets and K x oversample samples of each,
# its folders) or leaves at their defaults (no unconditional samples; torch threads beside the relaxations); every
# other field is how UniMat samples, taken as the generate options give it (`unimat discover-benchmark` has them).
SET_BY_BENCHMARK = frozenset({"checkpoint", "out_dir", "compositions", "samples_per_composition", "num_samples",
                              "unconditional", "cpu_threads"})


def sampling_settings(generation: GenerateConfig) -> dict:
    """How UniMat samples, as settings.json records it: the GenerateConfig fields the benchmark does not set."""
    return generation.model_dump(mode="json", include=set(GenerateConfig.model_fields) - SET_BY_BENCHMARK)


def benchmark_settings(checkpoint: str, discovery: DiscoveryParams, generation: GenerateConfig,
                       calculator: CalculatorConfig, relax: RelaxConfig) -> dict:
    """What a benchmark folder is made with (settings.json): a rerun with other settings is refused."""
    settings = {"checkpoint": checkpoint, "known": discovery.known, "compositions": list(discovery.compositions),
                "n_compositions": discovery.n_compositions, "unseen_only": discovery.unseen_only,
                "k": discovery.relaxations_per_composition, "seed": generation.seed,
                "generation": sampling_settings(generation),
                "random": discovery.random_config().as_dict(), "calculator": calculator.as_dict(),
                "relax": relax.model_dump()}
    # recorded only when set, so folders made before these options still resume
    if discovery.reference != "known":
        settings["reference"] = discovery.reference
    if discovery.oversample != 1:
        settings["oversample"] = discovery.oversample
    return settings


def relaxation_sets(reference: str) -> tuple[str, ...]:
    """The structure sets a benchmark relaxes: the known structures, or the element's reference phases."""
    return SETS if reference == "known" else ("reference", *METHODS)


# ---------------------------------------------------------------- targets and known structures


_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+'?([^'\n]+?)'?\s*$", re.MULTILINE)


def _cif_cell_formula(cif: str) -> str:
    """The cell formula a CIF declares (`_chemical_formula_sum`, as pymatgen writes it), else from parsing it."""
    found = _FORMULA_SUM.search(cif)
    return compact_formula(found.group(1) if found else parse_cif(cif)["formula"])


def _read_split(path: Path) -> pd.DataFrame:
    """Raw rows of one bundled split: material_id, cif, cell_formula, reduced_formula (carbon_24's CSVs have no
    formula column: the CIF's own formula line is read, without parsing every CIF)."""
    columns = ["material_id", "cif", "formula"] if "formula" in pd.read_csv(path, nrows=0).columns else \
        ["material_id", "cif"]
    rows = pd.read_csv(path, usecols=columns)
    rows["cell_formula"] = [_cif_cell_formula(c) for c in rows["cif"]]
    rows["reduced_formula"] = [Composition(f).reduced_formula for f in rows.get("formula", rows["cell_formula"])]
    return rows


def _bundled_test_rows(name: str, key: str = "reduced_formula") -> tuple[pd.DataFrame, set[str]]:
    """Raw test-split rows (id, cif, cell and reduced formula) and the `key` formulas of the other bundled splits.

    Reads the CSVs without parsing every CIF (only the chosen targets' CIFs are parsed later).
    """
    paths = bundled_csv_paths(name)
    test = _read_split(paths["test"])
    others: set[str] = set()
    for split, path in paths.items():
        if split != "test":
            others |= set(_read_split(path)[key])
    return test, others


def _known_table(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """Structure table of raw bundled rows (CIFs parsed here; an unparsable CIF is an error naming its id)."""
    records = []
    for material_id, cif in zip(rows["material_id"], rows["cif"]):
        try:
            records.append({"id": f"known-{material_id}", **parse_cif(cif), "split": "test", "source": source})
        except ValueError as exc:
            raise ValueError(f"known structure {material_id} of {source}: {exc}") from exc
    return conform(pd.DataFrame(records, columns=list(CORE_COLUMNS)))


def select_targets(known: str, compositions: Sequence[str], n_compositions: int, seed: int,
                   unseen_only: bool, by_cell: bool = False) -> tuple[list[str], pd.DataFrame]:
    """Target cell formulas and the known structures of each (column `target_formula`).

    `known` is a bundled dataset name (its test split) or a structure-table parquet. Without
    `compositions`, `n_compositions` reduced formulas are drawn (seeded) from the known table; with
    `unseen_only` (bundled data) only formulas absent from the other bundled splits are drawn, since a
    model trained on the bundled data saw those. Every target must have a known structure.

    `by_cell`: targets are cell formulas and a target's known structures are those of its exact cell (a
    one-element dataset such as carbon_24, where every structure reduces to "C", has targets C6, C8, ...).
    """
    key = "cell_formula" if by_cell else "reduced_formula"
    bundled = known in BUNDLED_DATASETS
    if bundled:
        pool, seen = _bundled_test_rows(known, key)
    else:
        path = Path(known)
        if not path.exists():
            raise FileNotFoundError(f"known structures: {known!r} is neither a bundled dataset "
                                    f"({sorted(BUNDLED_DATASETS)}) nor an existing structure-table parquet")
        pool, seen = read_structures(path), set()
        pool["cell_formula"] = [compact_formula(f) for f in pool["formula"]]
    available = set(pool[key])
    if compositions:
        targets = [compact_formula(c) for c in compositions]
        if len(set(targets)) != len(targets):
            raise ValueError(f"duplicate target compositions in {list(compositions)}")
        keys = targets if by_cell else [Composition(t).reduced_formula for t in targets]
        missing = [t for t, r in zip(targets, keys) if r not in available]
        if missing:
            raise ValueError(f"no known structure for {missing} in {known}{' with that cell' if by_cell else ''}: "
                             "the benchmark needs one per target")
    else:
        drawable = sorted(available - (seen if unseen_only else set()))
        if n_compositions > len(drawable):
            hint = " (only ones unseen in the other splits; --include-seen draws all)" if unseen_only and seen else ""
            raise ValueError(f"asked for {n_compositions} compositions, {known} has {len(drawable)} to draw "
                             f"from{hint}")
        keys = np.random.default_rng(seed).choice(drawable, size=n_compositions, replace=False).tolist()
        targets = []
    pieces = []
    for i, formula in enumerate(keys):
        rows = pool[pool[key] == formula]
        table = _known_table(rows, f"cdvae:{known}") if bundled else rows[list(CORE_COLUMNS)].copy()
        if not compositions:  # a drawn target is the smallest known cell of its composition
            targets.append(formula if by_cell else compact_formula(table.loc[table["n_sites"].idxmin(), "formula"]))
        table["id"] = [x if str(x).startswith("known-") else f"known-{x}" for x in table["id"]]
        table["target_formula"] = targets[i]
        pieces.append(table[[*CORE_COLUMNS, "target_formula"]])
    return targets, pd.concat(pieces, ignore_index=True)


def prepare_targets(folder: Path, settings: dict, known: str, compositions: Sequence[str], n_compositions: int,
                    seed: int, unseen_only: bool, reference: str = "known") -> dict:
    """Write targets.parquet and known/structures.parquet once (reused on resume); with reference "elemental",
    also reference/structures.parquet (the reference phases of the targets' element)."""
    check_settings(folder, settings)
    targets_path, known_path = folder / "targets.parquet", folder / "known" / "structures.parquet"
    reference_path = folder / "reference" / "structures.parquet"
    if targets_path.exists() and known_path.exists() and (reference == "known" or reference_path.exists()):
        targets = pd.read_parquet(targets_path)
        return {"compositions": targets["composition"].tolist(), "n_known": int(targets["n_known"].sum()),
                "reused": True}
    chosen, known_table = select_targets(known, compositions, n_compositions, seed, unseen_only,
                                         by_cell=reference == "elemental")
    if reference == "elemental":
        write_structures(reference_table(chosen), reference_path)  # raises naming a target with two elements
    write_structures(known_table, known_path)
    counts = known_table.groupby("target_formula").size()
    targets = pd.DataFrame({"composition": chosen, "reduced_formula": [Composition(c).reduced_formula for c in chosen],
                            "n_known": [int(counts.get(c, 0)) for c in chosen]})
    targets.to_parquet(targets_path, index=False)
    return {"compositions": chosen, "n_known": len(known_table), "reused": False}


# ---------------------------------------------------------------- candidates


def _candidate_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*CORE_COLUMNS, *CANDIDATE_EXTRA])
    return frame.astype({"n_sites": "int32", "n_elements": "int32", "trial": "int32", "valid": bool,
                         "seconds": float})


def usable_sample(row: dict) -> tuple[bool, str]:
    """Whether a generated sample is a usable proposal for its target: decoded, exactly the target composition,
    and structurally valid (atoms >= 0.5 A apart, CDVAE's rule; random cells obey a stricter one by construction).
    A sample failing any of these would be a relaxation that blows up at its first step, or of another material."""
    if not row["valid"]:
        return False, row["reason"] or "invalid decode"
    if Composition(row["formula"]) != Composition(row["target_formula"]):
        return False, f"sampled composition {row['formula']} is not the target"
    ok, why = structure_validity(structure_from_json(row["structure"]))
    return (True, "") if ok else (False, f"structurally invalid: {why}")


def pick_candidates(samples: list[dict], k: int) -> list[dict]:
    """The K proposals of one target from its samples in sampling order: the first K usable ones, topped up with
    unusable ones (spent trials) when fewer are usable; kept in sampling order, each with `usable`/`why`."""
    checked = [{**row, "order": i, **dict(zip(("usable", "why"), usable_sample(row)))} for i, row in enumerate(samples)]
    good = [r for r in checked if r["usable"]][:k]
    chosen = good + [r for r in checked if not r["usable"]][:k - len(good)]
    return sorted(chosen, key=lambda r: r["order"])


def unimat_candidates(checkpoint: str, compositions: Sequence[str], k: int, generation: GenerateConfig,
                      folder: Path, oversample: int = 1) -> dict:
    """K proposals per composition from `oversample` x K conditional samples (parts reused on resume), then
    `unimat/candidates.parquet`.

    The proposals are the first K usable samples (`usable_sample`), or all usable ones topped up with failed
    trials; the generation time of all the target's samples is charged to its K proposals. A composition the
    model cannot represent (element off the grid, more atoms than its L slots) becomes K failed trials with the
    reason; the other compositions are generated.
    """
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.device import pick_device
    from unimat_core.model.generation import (CompositionError, composition_counts, generate_part, plan_batches,
                                              read_generated)

    out_dir = folder / "unimat"
    generated = out_dir / "generated"
    config = generation.model_copy(update={"checkpoint": checkpoint, "out_dir": str(generated), "compositions": (),
                                           "samples_per_composition": k * oversample})
    loaded = load_model(checkpoint, pick_device(config.device), use_ema=config.use_ema)
    unusable: dict[str, str] = {}
    for formula in compositions:
        try:
            composition_counts(formula, loaded.spec)
        except CompositionError as exc:
            unusable[formula] = f"CompositionError: {exc}"
    config.compositions = tuple(c for c in compositions if c not in unusable)
    timing_path = generated / "timing.json"
    timing: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    reused = 0
    for batch, targets in enumerate(plan_batches(config, loaded.spec) if config.compositions else []):
        start = time.perf_counter()
        part = generate_part(config, batch, targets, loaded)
        if part["skipped"] and Path(part["part"]).name in timing:
            reused += 1
            continue
        timing[Path(part["part"]).name] = time.perf_counter() - start
        atomic.write_text(timing_path, json.dumps(timing, indent=1))  # small; rewritten after every new part

    rows = []
    if config.compositions:
        frame = read_generated(generated)
        sizes = frame.groupby("batch")["id"].transform("size")
        frame["seconds"] = [timing[f"part-{b:05d}.parquet"] / n for b, n in zip(frame["batch"], sizes)]
        for target, group in frame.groupby("target_formula", sort=False):
            share = float(group["seconds"].sum()) / k  # every sample's generation time, rejected ones included
            for trial, row in enumerate(pick_candidates(group.to_dict("records"), k)):
                rows.append({**{c: row[c] for c in CORE_COLUMNS}, "id": f"unimat-{target}-{trial:03d}",
                             "structure": row["structure"] if row["usable"] else None, "valid": row["usable"],
                             "reason": row["why"], "target_formula": target, "trial": trial, "seconds": share})
    for formula, reason in unusable.items():
        rows += [{"id": f"unimat-{formula}-{t:03d}", "formula": None, "reduced_formula": None, "chemsys": None,
                  "n_sites": 0, "n_elements": 0, "structure": None, "split": "", "source": "unimat", "valid": False,
                  "reason": reason, "target_formula": formula, "trial": t, "seconds": 0.0} for t in range(k)]
    table = _candidate_frame(rows)
    write_structures(table, out_dir / "candidates.parquet")
    return {"n": len(table), "n_valid": int(table["valid"].sum()), "seconds": round(float(table["seconds"].sum()), 2),
            "reused_parts": reused, "unusable": unusable, "model_step": loaded.step}


def random_search_candidates(compositions: Sequence[str], k: int, seed: int, config: RandomStructureConfig,
                             folder: Path) -> dict:
    """K random crystals per composition in `random/candidates.parquet` (reused on resume)."""
    path = folder / "random" / "candidates.parquet"
    if path.exists():
        table = read_structures(path)
        reused = True
    else:
        table = random_candidates(list(compositions), k, seed, config)
        write_structures(table, path)
        reused = False
    return {"n": len(table), "n_valid": int(table["valid"].sum()), "seconds": round(float(table["seconds"].sum()), 2),
            "reused": reused}


# ---------------------------------------------------------------- relaxation plan and chunks


def _chunk_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("chunk-*") if p.is_dir())


def relaxed_ids(root: Path) -> set[str]:
    """Ids relaxed (any outcome) in any chunk folder under `root`."""
    return set().union(*(finished_ids(chunk) for chunk in _chunk_dirs(root)))


def plan_relaxation(folder: Path, chunk_size: int, sets: Sequence[str] = SETS) -> list[dict]:
    """Chunks still to relax over the `sets` (known or reference, UniMat, random): {set, source, ids, out_dir} each, planned
    by the relaxation engine (dft.batch.plan_chunks): one chunk folder each, so a chunk task owns its folder.

    Ids finished in any earlier chunk folder are skipped, and new chunks get fresh folder numbers, so a
    rerun after a kill relaxes exactly what is missing.
    """
    chunks = []
    sources = {"known": folder / "known" / "structures.parquet", "reference": folder / "reference" / "structures.parquet",
               "unimat": folder / "unimat" / "candidates.parquet", "random": folder / "random" / "candidates.parquet"}
    for name in sets:
        source = sources[name]
        root = folder / "relaxed" / name
        plan = plan_chunks(source, root, chunk_size, done=relaxed_ids(root))
        first = max((int(p.name.split("-")[1]) for p in _chunk_dirs(root)), default=-1) + 1
        chunks += [{"set": name, "source": str(source), "ids": ids, "out_dir": str(root / f"chunk-{first + n:05d}")}
                   for n, ids in enumerate(plan["chunks"])]
    return chunks


def relax_chunk_rows(source: str, ids: list[str], out_dir: str, calculator: CalculatorConfig,
                     relax: RelaxConfig) -> dict:
    """Relax `ids` of `source` into `out_dir`'s one part with the engine (per-structure failures are rows)."""
    return relax_ids(source, ids, Path(out_dir) / "part-00000.parquet", calculator, relax)


def read_relaxed_set(folder: Path, name: str) -> pd.DataFrame:
    """Every relaxed row of one set (empty frame with the id column when nothing was relaxed)."""
    chunks = [chunk for chunk in _chunk_dirs(folder / "relaxed" / name) if part_files(chunk)]
    if not chunks:
        return pd.DataFrame(columns=["id", "structure", "energy_per_atom", "converged", "wall_time_s", "error"])
    return pd.concat([read_relaxed(chunk) for chunk in chunks], ignore_index=True).drop_duplicates("id", keep="last")


# ---------------------------------------------------------------- scoring


def _usable_energy(relaxed: pd.DataFrame, converged_only: bool) -> pd.Series:
    energy = relaxed["energy_per_atom"].astype(float)
    energy = energy.where(np.isfinite(energy))
    return energy.where(relaxed["converged"].eq(True)) if converged_only else energy


def known_reference(folder: Path, converged_only: bool) -> tuple[dict[str, float], dict[str, list]]:
    """Per target: the lowest relaxed known energy per atom, and the relaxed known structures."""
    known = read_structures(folder / "known" / "structures.parquet")
    relaxed = read_relaxed_set(folder, "known")
    merged = known[["id", "target_formula"]].merge(relaxed, on="id", how="left")
    merged["usable"] = _usable_energy(merged, converged_only)
    reference, structures = {}, {}
    for target, group in merged.groupby("target_formula"):
        good = group[group["usable"].notna()]
        if len(good):
            reference[target] = float(good["usable"].min())
            structures[target] = [structure_from_json(s) for s in good["structure"]]
    return reference, structures


def elemental_reference(folder: Path, converged_only: bool) -> tuple[dict[str, float], pd.DataFrame]:
    """Per target: the lowest relaxed energy per atom among its element's reference phases; and the phases table
    (element, phase, energy_per_atom, converged, lowest) for the report."""
    phases = read_structures(folder / "reference" / "structures.parquet")[["id", "element", "phase"]]
    merged = phases.merge(read_relaxed_set(folder, "reference"), on="id", how="left")
    merged["usable"] = _usable_energy(merged, converged_only)
    best = merged.groupby("element")["usable"].min()
    table = merged[["element", "phase"]].assign(energy_per_atom=merged["energy_per_atom"].astype(float),
                                                converged=merged["converged"].eq(True))
    table["lowest"] = merged["usable"].notna() & merged["usable"].eq(merged["element"].map(best))
    targets = pd.read_parquet(folder / "targets.parquet")["composition"]
    reference = {t: float(best[target_element(t)]) for t in targets if pd.notna(best.get(target_element(t)))}
    return reference, table


def unrelaxed_known(folder: Path) -> dict[str, list]:
    """Per target: the known structures as stored (reference "elemental" matches against them unrelaxed)."""
    known = read_structures(folder / "known" / "structures.parquet")
    return {target: [structure_from_json(s) for s in group["structure"]]
            for target, group in known.groupby("target_formula")}


def trial_results(folder: Path, known_structures: dict[str, list], converged_only: bool,
                  matcher: StructureMatcher) -> pd.DataFrame:
    """One row per proposed candidate and method, in the columns discovery_report expects (+ diagnostics)."""
    frames = []
    for method in METHODS:
        candidates = read_structures(folder / method / "candidates.parquet").drop(columns=["structure"])
        relaxed = read_relaxed_set(folder, method)[["id", "structure", "energy_per_atom", "converged", "wall_time_s",
                                                   "error"]]
        merged = candidates.merge(relaxed, on="id", how="left")
        merged["energy"] = _usable_energy(merged, converged_only)
        matches = []
        for target, text, energy in zip(merged["target_formula"], merged["structure"], merged["energy"]):
            refs = known_structures.get(target, [])
            matches.append(bool(np.isfinite(energy) and refs and any(matcher.fit(structure_from_json(text), r)
                                                                      for r in refs)))
        frames.append(pd.DataFrame({
            "method": method, "composition": merged["target_formula"], "trial": merged["trial"].astype(int),
            "energy_per_atom": merged["energy"].astype(float), "matches_known": matches,
            "seconds": merged["seconds"].astype(float) + merged["wall_time_s"].astype(float).fillna(0.0),
            "id": merged["id"], "valid": merged["valid"], "reason": merged["reason"],
            "relaxed": merged["wall_time_s"].notna(), "converged": merged["converged"].eq(True),
            "relax_error": merged["error"].fillna(""),
        }))
    return pd.concat(frames, ignore_index=True).sort_values(["method", "composition", "trial"], ignore_index=True)


def _json_safe(value):
    """NaN (a metric with nothing to compare) as JSON null."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and not np.isfinite(value) else value


REPORT_FILES = ("report.md", "convergence.png", "results.parquet", "per_composition.parquet", "curves.parquet",
                "summary.parquet", "lowest.parquet", "paper_metrics.json")


def report_files(folder: Path) -> dict[str, Path]:
    """The files `score` writes, by name."""
    return {name: folder / name for name in REPORT_FILES}


def score(folder: Path, budget: int, tolerance: float, converged_only: bool, reference_kind: str = "known") -> dict:
    """All tables, the markdown report and the PNG plot; returns their paths and the small summary.

    `reference_kind` "known": a target's energy is measured against its lowest relaxed known structure, and
    candidates are matched to the relaxed known structures; "elemental": against its element's lowest relaxed
    reference phase, and candidates are matched to the known (test-split) structures of its cell as stored."""
    phases = None
    if reference_kind == "elemental":
        reference, phases = elemental_reference(folder, converged_only)
        known_structures = unrelaxed_known(folder)
    else:
        reference, known_structures = known_reference(folder, converged_only)
    matcher = StructureMatcher()  # pymatgen defaults: ltol 0.2, stol 0.3, angle_tol 5
    results = trial_results(folder, known_structures, converged_only, matcher)
    results.to_parquet(folder / "results.parquet", index=False)
    targets = pd.read_parquet(folder / "targets.parquet")["composition"].tolist()
    unscored = sorted(set(targets) - set(reference))
    scored = results[results["composition"].isin(reference)]
    if scored.empty:
        what = "relaxed reference phase" if phases is not None else "relaxed known structure"
        raise ValueError(f"no target has a {what} (unscored: {unscored}); nothing to compare")
    curves = report.best_after_k(scored, reference, report.ks_up_to(budget))
    per_composition = report.relaxations_to_reach(scored, reference, tolerance)
    best = scored.groupby(["method", "composition"])["energy_per_atom"].min().rename("best_energy_per_atom")
    per_composition = per_composition.merge(best.reset_index(), on=["method", "composition"])
    per_composition.insert(2, "known_energy_per_atom", per_composition["composition"].map(reference))
    summary = report.summarise(per_composition)
    curves.to_parquet(folder / "curves.parquet", index=False)
    per_composition.to_parquet(folder / "per_composition.parquet", index=False)
    summary.to_parquet(folder / "summary.parquet", index=False)
    atomic.write_bytes(folder / "convergence.png", report.convergence_plot(curves))
    label = ("the best known phase of the element (lowest relaxed reference phase)" if phases is not None
             else "the known structure's energy")
    text = report.markdown_report(summary, per_composition, tolerance, curves=curves, reference_label=label)
    lowest = report.lowest_per_composition(scored, reference)
    paper = report.paper_metrics(lowest)
    lowest.to_parquet(folder / "lowest.parquet", index=False)
    atomic.write_text(folder / "paper_metrics.json", json.dumps(_json_safe(paper), indent=1))
    text += "\n" + report.paper_markdown(paper, lowest)
    if phases is not None:
        text += ("\n## Reference phases\n\nRelaxed with the benchmark's calculator and settings; the lowest per "
                 "element is the best known energy every target of that element is measured against. Match rate = "
                 "relaxed candidates matching any known (test-split) structure of the target's cell as stored.\n\n"
                 + phases.to_markdown(index=False, floatfmt=".4f") + "\n")
    text += (f"\nBudget: {budget} proposals per composition and method; a failed proposal (invalid decode, atoms "
             f"closer than 0.5 A, no random cell) is a spent trial without an energy. Energies: {'converged relaxations only' if converged_only else 'every relaxation that returned an energy (converged or at its step/time limit)'}. "
             f"Compute time = generation share + relaxation wall time (model and calculator loading excluded).\n")
    below = scored[scored["energy_per_atom"] < scored["composition"].map(reference) - SUSPECT_BELOW_KNOWN]
    if len(below):
        counts = ", ".join(f"{m} {n}" for m, n in below.groupby("method").size().items())
        why = ("the element's best known phase: an artefact of the calculator (collapsed or unconverged cell, or an "
               "error of the potential) unless it is a new ground state of the element" if phases is not None else
               "the known structure: either the known structure is not this calculator's ground state (perov_5 holds "
               "hypothetical cubic perovskites; e.g. N-N bonded nitrides relax lower) or the energy is an artefact "
               "(collapsed or unconverged cell)")
        text += (f"\nSuspect: {len(below)} relaxations ({counts}; {int(below['converged'].sum())} converged) ended more "
                 f"than {SUSPECT_BELOW_KNOWN * 1000:.0f} meV/atom below {why}. "
                 "Inspect them before counting them as discoveries.\n")
    if unscored:
        what = "reference phase" if phases is not None else "known structure"
        text += f"\nNot scored (no {what} relaxed): {', '.join(unscored)}\n"
    atomic.write_text(folder / "report.md", text)
    return {"reference": reference, "unscored": unscored, "summary": summary, "per_composition": per_composition,
            "curves": curves, "markdown": text, "paper": paper, "lowest": lowest, "phases": phases}

