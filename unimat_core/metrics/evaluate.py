"""Evaluate generated structures against a reference split: the CDVAE metrics + uniqueness/novelty.

Protocol (CDVAE `scripts/compute_metrics.py`): validity over all generated rows (a row without a
structure is invalid with its reason); EMDs of density and element count on a seeded random
subset of `n_eval` valid structures against the whole reference split; coverage with the
per-dataset cutoffs. CDVAE's script computes coverage over *all* generated crystals (precision
divided by the number generated), which is our default `coverage_on="all"`; `"subset"`
computes fingerprints and coverage only on the `n_eval` subset (much faster, but COV-R then
depends on n_eval and is not comparable with published tables).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ConfigDict, Field, ValidationError, model_validator

from unimat_core import atomic
from unimat_core.atomic import atomic_path
from unimat_core.metrics import cache
from unimat_core.metrics.analysis import Analysis, analyse_structures, check_structures
from unimat_core.metrics.cdvae_constants import COV_CUTOFFS, DEFAULT_DATASET
from unimat_core.metrics.coverage import coverage
from unimat_core.metrics.distributions import emd, eval_subset
from unimat_core.metrics.parallel import WorkerPool
from unimat_core.metrics.uniqueness import MatcherSettings, uniqueness_novelty
from unimat_core.settings import Config, option

log = logging.getLogger(__name__)

Coverage = Literal["all", "subset"]
COVERAGE_MODES: tuple[str, ...] = get_args(Coverage)
PER_STRUCTURE_COLUMNS = ("id", "valid_struct", "valid_comp", "valid", "unique", "novel", "reason", "reduced_formula",
                         "density", "n_elements", "fingerprint_ok", "in_eval")


DATASET_ALIASES = {"mp20": "mp_20", "mp": "mp_20", "carbon": "carbon_24", "perovskite": "perov_5"}  # CDVAE's names


def dataset_key(name: str) -> str:
    return DATASET_ALIASES.get(name, name)


class MetricsError(ValueError):
    """Inputs the evaluation cannot work with (no structure column, empty reference, bad config)."""


class MetricsConfig(Config):
    """Every metrics setting, declared once: what `evaluate_structures` reads and the `unimat evaluate` options
    (flows.params.EvaluateParams is this config plus the stage's record rules and CSP settings). A bad value
    raises MetricsError naming it."""

    model_config = ConfigDict(frozen=True)

    dataset: str | None = option("--eval-dataset", "metric cutoffs of perov_5 | carbon_24 | mp_20 (default: the "
                                 "fetched source's; perov_5 when unknown)", default=None)
    struct_cutoff: float | None = Field(default=None, gt=0, description="COV structure cutoff (default: the dataset's)")
    comp_cutoff: float | None = Field(default=None, gt=0, description="COV composition cutoff (default: the dataset's)")
    n_eval: int = Field(default=1000, ge=1, description="valid samples for coverage/EMD (a seeded subset)")
    seed: int = option("--eval-seed", "seed of the evaluated subsets", default=0)
    n_workers: int = option("--eval-workers", "fingerprint processes", default=2, ge=1)
    cache_dir: str | None = Field(default=None, description="fingerprint cache (default: "
                                  "<results-root>/.cache/fingerprints, shared by campaigns)")
    coverage_on: Coverage = Field(default="all", description="COV over every valid sample (CDVAE) or the --n-eval "
                                  "subset")
    reference_limit: int | None = Field(default=None, ge=1, description="seeded subset of the reference split "
                                        "(default: all, as CDVAE)")
    # StructureMatcher tolerances of uniqueness/novelty (pymatgen's defaults)
    ltol: float = option(None, default=0.2, gt=0)
    stol: float = option(None, default=0.3, gt=0)
    angle_tol: float = option(None, default=5.0, gt=0)
    # off: uniqueness and novelty are reported n/a: one formula group of thousands of structures (carbon_24: every
    # sample is "C") costs millions of StructureMatcher fits, hours on a laptop
    matching: bool = option("--no-matching", "uniqueness and novelty (one formula group of thousands, e.g. "
                            "carbon_24, takes hours)", default=True)

    def __init__(self, **data) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if type(self) is not MetricsConfig:  # a subclass (the evaluate stage's parameters) names options itself
                raise
            raise MetricsError(_mistakes(exc)) from None

    @classmethod
    def from_dict(cls, data: dict | None) -> MetricsConfig:
        return cls(**dict(data or {}))

    @model_validator(mode="after")
    def _known_dataset(self) -> MetricsConfig:
        explicit = self.struct_cutoff is not None and self.comp_cutoff is not None
        if self.dataset is not None and dataset_key(self.dataset) not in COV_CUTOFFS and not explicit:
            raise ValueError(f"unknown dataset {self.dataset!r} for coverage cutoffs; known: {sorted(COV_CUTOFFS)} "
                             "(or give both struct_cutoff and comp_cutoff)")
        return self

    @property
    def cutoffs(self) -> tuple[float, float]:
        """(struct, comp) cutoffs: explicit values win, else the dataset's (perov_5 when unset)."""
        struct, comp = COV_CUTOFFS.get(dataset_key(self.dataset or DEFAULT_DATASET), (None, None))
        return (struct if self.struct_cutoff is None else self.struct_cutoff,
                comp if self.comp_cutoff is None else self.comp_cutoff)

    @property
    def matcher(self) -> MatcherSettings:
        return MatcherSettings(ltol=self.ltol, stol=self.stol, angle_tol=self.angle_tol)


def _mistakes(exc: ValidationError) -> str:
    """One line naming every bad metrics option."""
    unknown = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden")
    found = [f"unknown metrics option(s) {unknown}"] if unknown else []
    for error in exc.errors():
        if error["type"] != "extra_forbidden":
            where = f"{error['loc'][0]}: " if error["loc"] else ""
            found.append(f"{where}{error['msg'].removeprefix('Value error, ')}"
                         + ("" if error["type"] == "value_error" else f", not {error['input']!r}"))
    return "; ".join(found)


@dataclass
class MetricsResult:
    per_structure: pd.DataFrame  # PER_STRUCTURE_COLUMNS
    summary: dict  # numbers only: fractions in 0..1, distances, counts, seconds
    config: MetricsConfig = field(default_factory=MetricsConfig)
    reason_counts: dict[str, int] = field(default_factory=dict)  # invalid rows by kind of reason

    def markdown(self) -> str:
        s = self.summary
        pct = lambda key: "n/a" if not np.isfinite(s.get(key, np.nan)) else f"{100 * s[key]:.2f} %"  # noqa: E731
        num = lambda key: "n/a" if not np.isfinite(s.get(key, np.nan)) else f"{s[key]:.4f}"  # noqa: E731
        lines = [
            f"## Generation metrics ({self.config.dataset or DEFAULT_DATASET} cutoffs: struct "
            f"{s['struct_cutoff']}, comp {s['comp_cutoff']}; coverage on {self.config.coverage_on})",
            "",
            *([f"Reference: a seeded subset of {s['n_reference']} of the {s['n_reference_given']} reference structures "
               "(quick run; CDVAE uses all).", ""] if s.get("n_reference_given", s["n_reference"]) > s["n_reference"]
              else []),
            "| metric | value |",
            "|---|---|",
            f"| generated | {s['n_generated']} |",
            f"| structural validity | {pct('struct_validity')} |",
            f"| compositional validity | {pct('comp_validity')} |",
            f"| validity | {pct('validity')} ({s['n_valid']} valid) |",
            f"| COV-R | {pct('cov_recall')} |",
            f"| COV-P | {pct('cov_precision')} |",
            f"| EMD density (g/cm^3) | {num('emd_density')} (on {s['n_eval']} valid vs {s['n_reference_used']} reference) |",
            f"| EMD # elements | {num('emd_n_elements')} |",
            f"| uniqueness | {pct('uniqueness')} |",
            f"| novelty | {pct('novelty')} (vs {s.get('n_known', 0)} known crystals) |",
            f"| fingerprint failures | {s['n_fingerprint_failures']} |",
        ]
        if self.reason_counts:
            lines += ["", "| why invalid | rows |", "|---|---|"]
            lines += [f"| {reason} | {count} |" for reason, count in self.reason_counts.items()]
            lines += ["", "Rows are counted by kind of reason; each row's own reason, with its numbers, is the "
                          "`reason` column of per_structure.parquet."]
        return "\n".join(lines) + "\n"


# What an invalid row's reason says, without the numbers of that row, so rows can be counted by kind: (pattern of
# one reason, its label). The row's own reason, numbers included, stays in per_structure.parquet (`reason`).
REASON_KINDS: tuple[tuple[str, str], ...] = (
    (r"atoms \S+ A apart \(< (\S+) A\)", r"atoms closer than \1 A"),
    (r"cell volume \S+ A\^3 (?:<|below) ([^\s;]+)", r"cell volume below \1 A^3"),
    (r"\S+ fails SMACT", "fails SMACT charge neutrality/electronegativity"),
    (r"(degenerate (?:or non-finite )?lattice parameters)", r"\1"),
    (r"element\(s\) .* not on the periodic-table grid", "element(s) not on the periodic-table grid"),
    (r"\d+ \S+ atoms exceed the (\d+) slots", r"more atoms of one element than its \1 slots (L)"),
    (r"raise max_atoms_per_element", ""),  # the advice that follows the reason above: no kind of its own
    (r"(unreadable structure|CrystalNN failed|fingerprint failed|no SMACT data)", r"\1"),
)


def reason_kind(reason: str) -> str:
    """The kind of an invalid row's reason, readable and without the row's numbers (see REASON_KINDS); a reason of
    no known kind keeps its words up to its first number."""
    kinds = []
    for part in reason.split("; "):
        origin = "generation: " if part.startswith("generation: ") else ""
        part = part.removeprefix(origin)
        for pattern, label in REASON_KINDS:
            match = re.match(pattern, part)
            if match:
                part = match.expand(label)
                break
        else:
            part = re.split(r"\s[-+\[(]?\d", part)[0]
        if part:
            kinds.append(origin + part)
    return "; ".join(kinds)


def _prior_reasons(generated: pd.DataFrame) -> list[str | None]:
    """Rows the generator already marked invalid (valid=False) keep its reason."""
    if "valid" not in generated.columns:
        return [None] * len(generated)
    reasons = generated["reason"] if "reason" in generated.columns else pd.Series([None] * len(generated))
    out = []
    for flag, reason in zip(generated["valid"], reasons):
        bad = flag is not None and not pd.isna(flag) and not bool(flag)
        out.append((f"generation: {reason}" if isinstance(reason, str) and reason else "generation: invalid")
                   if bad else None)
    return out


def _reference_analysis(reference: pd.DataFrame, config: MetricsConfig, pool: WorkerPool) -> tuple[Analysis, bool]:
    """Reference checks + fingerprints of every row, from the on-disk cache when possible."""
    key = cache.table_key(reference["id"] if "id" in reference else reference.index, reference["structure"])
    if config.cache_dir:
        cached = cache.load(config.cache_dir, key)
        if cached is not None and len(cached) == len(reference):
            return cached, True
    analysis = analyse_structures(reference["structure"].tolist(), workers=pool)
    if config.cache_dir:
        cache.save(config.cache_dir, key, analysis)
    return analysis, False


def _fraction(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def evaluate_structures(generated: pd.DataFrame, reference: pd.DataFrame, known: pd.DataFrame | None = None,
                        config: MetricsConfig = MetricsConfig()) -> MetricsResult:
    """Metrics of `generated` against `reference`, and novelty against `known` (every known crystal, see
    `unimat_core.metrics.known`; the training split alone would call a known test crystal novel)."""
    with WorkerPool(config.n_workers) as pool:
        return _evaluate(generated, reference, known, config, pool)


def _evaluate(generated: pd.DataFrame, reference: pd.DataFrame, known: pd.DataFrame | None, config: MetricsConfig,
              pool: WorkerPool) -> MetricsResult:
    for name, table in (("generated", generated), ("reference", reference), ("known", known)):
        if table is not None and "structure" not in table.columns:
            raise MetricsError(f"{name} table has no 'structure' column (expected the structure-table schema)")
    if len(reference) == 0:
        raise MetricsError("reference table is empty")
    n_reference_given = len(reference)
    if config.reference_limit is not None and len(reference) > config.reference_limit:
        keep = eval_subset(np.ones(len(reference), dtype=bool), config.reference_limit, config.seed)
        reference = reference.iloc[keep].reset_index(drop=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    texts = generated["structure"].tolist()
    ids = generated["id"].astype(str).tolist() if "id" in generated.columns else [str(i) for i in range(len(generated))]
    checked = check_structures(texts, _prior_reasons(generated), pool)
    timings["seconds_check"] = time.perf_counter() - start

    start = time.perf_counter()
    if config.coverage_on == "all":
        gen = analyse_structures(texts, workers=pool, checked=checked)
        eval_rows = eval_subset(gen.frame["valid"].to_numpy(), config.n_eval, config.seed)
    else:
        subset = eval_subset((checked["valid_struct"] & checked["valid_comp"]).to_numpy(), config.n_eval, config.seed)
        gen = analyse_structures(texts, workers=pool, fingerprint_rows=subset, checked=checked)
        eval_rows = subset[gen.frame["valid"].to_numpy()[subset]]
    timings["seconds_fingerprints"] = time.perf_counter() - start

    start = time.perf_counter()
    ref, reference_cached = _reference_analysis(reference, config, pool)
    timings["seconds_reference"] = time.perf_counter() - start
    ref_ok = ref.frame["fingerprint_ok"].to_numpy()
    if not ref_ok.any():
        raise MetricsError("no reference structure could be fingerprinted")

    frame = gen.frame
    valid = frame["valid"].to_numpy()
    struct_cutoff, comp_cutoff = config.cutoffs
    if config.coverage_on == "all":
        cov_rows, n_cov = np.flatnonzero(frame["fingerprint_ok"].to_numpy()), len(frame)
    else:
        cov_rows, n_cov = eval_rows, len(subset)
    cov = coverage(gen.struct_fp[cov_rows], gen.comp_fp[cov_rows], ref.struct_fp[ref_ok], ref.comp_fp[ref_ok],
                   struct_cutoff, comp_cutoff, n_generated=n_cov)
    ref_rows = ref.frame["has_structure"].to_numpy()
    emd_density = emd(frame["density"].to_numpy()[eval_rows], ref.frame["density"].to_numpy()[ref_rows])
    emd_n_elements = emd(frame["n_elements"].to_numpy()[eval_rows], ref.frame["n_elements"].to_numpy()[ref_rows])

    start = time.perf_counter()
    valid_rows = np.flatnonzero(valid)
    known_texts = known_formulas = None
    if known is not None:
        known_texts = known["structure"].tolist()
        known_formulas = (known["reduced_formula"].tolist() if "reduced_formula" in known.columns
                          else check_structures(known_texts, workers=pool)["reduced_formula"].tolist())
    unique_v = novel_v = None
    if config.matching:
        unique_v, novel_v = uniqueness_novelty([texts[i] for i in valid_rows],
                                               frame["reduced_formula"].iloc[valid_rows].tolist(),
                                               known_texts, known_formulas, config.matcher, pool)
    timings["seconds_matching"] = time.perf_counter() - start
    unique = pd.array([pd.NA] * len(frame), dtype="boolean")
    novel = pd.array([pd.NA] * len(frame), dtype="boolean")
    if unique_v is not None:
        unique[valid_rows] = unique_v
    if novel_v is not None:
        novel[valid_rows] = novel_v
    in_eval = np.zeros(len(frame), dtype=bool)
    in_eval[eval_rows] = True

    per_structure = pd.DataFrame({
        "id": ids, "valid_struct": frame["valid_struct"], "valid_comp": frame["valid_comp"], "valid": frame["valid"],
        "unique": unique, "novel": novel, "reason": frame["reason"], "reduced_formula": frame["reduced_formula"],
        "density": frame["density"], "n_elements": frame["n_elements"], "fingerprint_ok": frame["fingerprint_ok"],
        "in_eval": in_eval,
    }, columns=list(PER_STRUCTURE_COLUMNS))
    n = len(frame)
    n_valid = int(valid.sum())
    summary = {
        "n_generated": n,
        "n_with_structure": int(frame["has_structure"].sum()),
        "n_valid": n_valid,
        "n_eval": len(eval_rows),
        "n_reference": len(reference),
        "n_reference_given": n_reference_given,
        "n_reference_used": int(ref_ok.sum()),
        "n_known": 0 if known is None else len(known),
        "n_fingerprint_failures": int((frame["fingerprinted"] & ~frame["fingerprint_ok"]).sum()),
        "struct_validity": _fraction(frame["valid_struct"].sum(), n),
        "comp_validity": _fraction(frame["valid_comp"].sum(), n),
        "validity": _fraction(n_valid, n),
        **cov,
        "emd_density": emd_density,
        "emd_n_elements": emd_n_elements,
        "n_unique": float("nan") if unique_v is None else int(unique_v.sum()),
        "uniqueness": float("nan") if unique_v is None else _fraction(unique_v.sum(), n_valid),
        "n_novel": float("nan") if novel_v is None else int(novel_v.sum()),
        "novelty": float("nan") if novel_v is None else _fraction(novel_v.sum(), n_valid),
        "struct_cutoff": float(struct_cutoff),
        "comp_cutoff": float(comp_cutoff),
        "reference_cached": float(reference_cached),
        **timings,
    }
    kinds = Counter(reason_kind(r) for r, ok in zip(frame["reason"], valid) if not ok and isinstance(r, str))
    return MetricsResult(per_structure, summary, config, dict(kinds.most_common(12)))


def write_metrics(result: MetricsResult, out_dir: str | Path) -> dict:
    """per_structure.parquet, summary.parquet (one row), summary.md, config.json; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_structure": out / "per_structure.parquet", "summary": out / "summary.parquet",
             "markdown": out / "summary.md", "config": out / "config.json"}
    with atomic_path(paths["per_structure"]) as tmp:
        result.per_structure.to_parquet(tmp, index=False)
    with atomic_path(paths["summary"]) as tmp:
        pq.write_table(pa.Table.from_pylist([result.summary]), tmp)  # NaN stays NaN (pandas would make it null)
    atomic.write_text(paths["markdown"], result.markdown())
    config = {"config": result.config.as_dict(), "reason_counts": result.reason_counts}
    atomic.write_text(paths["config"], json.dumps(config, indent=2))
    return {key: str(path) for key, path in paths.items()}


def read_metrics(out_dir: str | Path) -> MetricsResult:
    """The result `write_metrics` wrote (to compare runs or re-render the markdown)."""
    out = Path(out_dir)
    meta = json.loads((out / "config.json").read_text())
    summary = pq.read_table(out / "summary.parquet").to_pylist()[0]  # keeps ints as ints
    return MetricsResult(pd.read_parquet(out / "per_structure.parquet"), summary,
                         MetricsConfig.from_dict(meta["config"]), meta["reason_counts"])
