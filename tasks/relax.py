"""Relax stage: chunked relaxation of generated (or any) structure tables into `part-XXXXX.parquet`.

The flow plans chunks of ids (small lists) and maps `relax_chunk` over them, so the chunks run on
whatever task runner the flow has (threads locally, a Dask cluster remotely). Each chunk reads its
rows from the input parquet itself, relaxes them with dft's engine (batched for ML potentials: the
chunk's crystals share each model call) and writes one part file atomically, named by the plan: a chunk killed mid-way leaves no part, and the next plan relaxes
exactly the ids that are in no part yet (dft.batch.finished_ids).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from dft.batch import PART_RE, RELAXED_SOURCE, finished_ids, read_relaxed, results_to_frame
from dft.calculators import OUT_OF_PROCESS, BuiltCalculator, CalculatorConfig, build_calculator
from dft.engine import relax_structures
from dft.relax import RelaxConfig, RelaxResult
from tasks.artifacts import artifact_key, file_links, histogram_png, inline_image
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import CORE_COLUMNS, conform, read_structure_text, write_structures

# Built calculators are expensive (CHGNet: ~1 s and a model in memory) and not thread-safe, so
# each worker process keeps a small pool: a chunk borrows one, and returns it when done.
_POOL: dict[str, list[BuiltCalculator]] = {}
_POOL_LOCK = threading.Lock()


@contextmanager
def pooled_calculator(config: CalculatorConfig) -> Iterator[BuiltCalculator | CalculatorConfig]:
    """Borrow a built calculator of this process's pool (built on first use), give it back afterwards.

    GPAW / VASP / QE run outside this process: their config is handed through unchanged.
    """
    if config.name in OUT_OF_PROCESS:
        yield config
        return
    key = json.dumps(config.as_dict(), sort_keys=True)
    with _POOL_LOCK:
        free = _POOL.setdefault(key, [])
        built = free.pop() if free else None
    built = built or build_calculator(config)
    try:
        yield built
    finally:
        with _POOL_LOCK:
            _POOL[key].append(built)


def _input_files(source: str | Path) -> list[Path]:
    source = Path(source)
    return sorted(source.glob("part-*.parquet")) if source.is_dir() else [source]


def read_rows(source: str | Path, ids: list[str] | None = None, *, valid_only: bool = True) -> pd.DataFrame:
    """Rows of a structure table (a file, or a folder of parts) with a structure, optionally only `ids`."""
    files = [str(p) for p in _input_files(source)]
    # one schema for all parts: a part whose optional column is empty everywhere stores it as type null
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    dataset = ds.dataset(files, format="parquet", schema=schema)
    filt = ds.field("structure").is_valid()
    if valid_only and "valid" in dataset.schema.names:
        filt &= ds.field("valid") == True  # noqa: E712 - an Arrow expression, not a Python comparison
    if ids is not None:
        filt &= ds.field("id").isin(ids)
    return dataset.to_table(filter=filt).to_pandas()


def plan_chunks(source: str | Path, out_dir: str | Path, chunk_size: int, ids: list[str] | None = None) -> dict:
    """Chunks of ids still to relax and the part file each will write (resume = skip finished ids)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    out = Path(out_dir)
    candidates = read_rows(source, ids)["id"].tolist()
    done = finished_ids(out) if out.is_dir() else set()
    todo = [i for i in candidates if i not in done]
    existing = [int(m.group(1)) for p in out.glob("part-*.parquet") if (m := PART_RE.match(p.name))]
    first = max(existing, default=-1) + 1
    chunks = [todo[k:k + chunk_size] for k in range(0, len(todo), chunk_size)]
    parts = [str(out / f"part-{first + k:05d}.parquet") for k in range(len(chunks))]
    return {"chunks": chunks, "parts": parts, "n_candidates": len(candidates), "n_done_before": len(candidates) - len(todo)}


@task(name="plan-relax")
def plan_relax(source: str, out_dir: str, chunk_size: int, ids: list[str] | None = None) -> dict:
    """Which ids each chunk relaxes (small lists of strings) and the part each chunk writes."""
    plan = plan_chunks(source, out_dir, chunk_size, ids)
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the stage ran, even with nothing to relax
    get_run_logger().info("relax plan: %d candidates, %d already relaxed, %d chunks of <= %d", plan["n_candidates"],
                          plan["n_done_before"], len(plan["chunks"]), chunk_size)
    return plan


def _too_big(structure, max_sites: int | None, calculator: str) -> RelaxResult | None:
    """A recorded refusal for cells beyond `max_sites` (e.g. a barely trained model's 200-atom soup)."""
    if max_sites is None or len(structure) <= max_sites:
        return None
    return RelaxResult(structure=structure, calculator=calculator,
                       error=f"skipped: {len(structure)} sites > max_sites {max_sites}")


def relax_ids(source: str | Path, ids: list[str], part: str | Path, calculator: CalculatorConfig, relax: RelaxConfig,
              max_sites: int | None = None) -> dict:
    """Relax `ids` of `source` and write them to `part`; per-structure failures are rows, not exceptions."""
    part = Path(part)
    if part.exists():  # finished by an earlier (retried or resumed) run
        converged = pd.read_parquet(part, columns=["converged"])["converged"].astype(bool)
        return {"part": str(part), "n": len(converged), "n_converged": int(converged.sum()),
                "n_failed": int((~converged).sum()), "skipped": True}
    rows = read_rows(source, ids).set_index("id", drop=False).loc[ids].reset_index(drop=True)
    calc_config, relax_config = calculator, relax
    parsed = [read_structure_text(text) for text in rows["structure"]]
    readable = [i for i, (structure, _) in enumerate(parsed) if structure is not None]
    refused = {i: r for i in readable if (r := _too_big(parsed[i][0], max_sites, calc_config.name))}
    with pooled_calculator(calc_config) as built:  # the rest of the chunk in one engine call (batched for ML)
        relaxed = iter(relax_structures([parsed[i][0] for i in readable if i not in refused], built, relax_config))
        results = [refused.get(i) or next(relaxed) for i in readable]
    unreadable = [i for i, (structure, _) in enumerate(parsed) if structure is None]
    frames = [results_to_frame(rows.iloc[readable].reset_index(drop=True), results)] if results else []
    if unreadable:  # one bad row is a row with its id and reason; the rest of the chunk is relaxed
        frames.append(_unreadable_rows(rows.iloc[unreadable], [parsed[i][1] for i in unreadable], calc_config.name))
    frame = pd.concat(frames, ignore_index=True).set_index("id", drop=False).loc[ids].reset_index(drop=True)
    write_structures(conform(frame), part)
    converged = sum(r.converged for r in results)
    return {"part": str(part), "n": len(rows), "n_converged": converged, "n_failed": len(rows) - converged,
            "skipped": False}


def _unreadable_rows(rows: pd.DataFrame, reasons: list[str], calculator: str) -> pd.DataFrame:
    """Relaxed-table rows for inputs whose structure cannot be read: no structure, the input's formula
    columns, and the reason as `error` (the columns results_to_frame gives a relaxed structure)."""
    frame = rows[list(CORE_COLUMNS)].assign(structure=None, source=RELAXED_SOURCE).reset_index(drop=True)
    failed = [RelaxResult(structure=None, calculator=calculator, error=reason).properties() for reason in reasons]
    extra = {f"input_{c}": rows[c].tolist() for c in rows.columns if c not in CORE_COLUMNS}
    return pd.concat([frame, pd.DataFrame(failed), pd.DataFrame({**extra, "input_source": rows["source"].tolist()})],
                     axis=1)


@task(name="relax-chunk", retries=1)
def relax_chunk(source: str, ids: list[str], part: str, calculator: CalculatorConfig, relax: RelaxConfig,
                max_sites: int | None = None) -> dict:
    """One chunk: small arguments only (paths, ids, config dicts), so it ships to any worker."""
    summary = relax_ids(source, ids, part, calculator, relax, max_sites)
    get_run_logger().info("%s: %d structures, %s", Path(part).name, summary["n"],
                          "already written" if summary["skipped"] else f"{summary['n_converged']} converged")
    return summary


def relaxed_summary(out_dir: str | Path) -> dict:
    """Counts over every part of a relax folder, with the most common failure reasons."""
    if not any(Path(out_dir).glob("part-*.parquet")):  # nothing valid was generated
        return {"out_dir": str(out_dir), "n_relaxed": 0, "n_converged": 0, "n_failed": 0, "failure_reasons": {},
                "median_steps": 0.0, "total_wall_s": 0.0, "calculators": []}
    frame = read_relaxed(out_dir)
    reasons = Counter(str(e).split(":")[0] for e in frame["error"] if e)
    return {"out_dir": str(out_dir), "n_relaxed": len(frame), "n_converged": int(frame["converged"].sum()),
            "n_failed": int((~frame["converged"].astype(bool)).sum()), "failure_reasons": dict(reasons.most_common(5)),
            "median_steps": float(frame["steps"].median()), "total_wall_s": round(float(frame["wall_time_s"].sum()), 1),
            "calculators": sorted(set(frame["calculator"]) - {""})}


@task(name="relax-report")
def relax_report(layout: RunLayout, n_done_before: int, chunks: list[dict]) -> dict:
    """Summary of the relax folder + a markdown artifact (counts, failure reasons, step histogram, files)."""
    summary = {**relaxed_summary(layout.relaxed), "n_done_before": n_done_before,
               "n_relaxed_now": sum(c["n"] for c in chunks if not c["skipped"])}
    steps = read_relaxed(layout.relaxed)["steps"] if summary["n_relaxed"] else []
    png = histogram_png(steps, layout.relaxed / "steps.png", title="optimizer steps per structure",
                        xlabel="steps")
    reasons = "".join(f"* {k}: {v}\n" for k, v in summary["failure_reasons"].items()) or "* none\n"
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "relax"),
        markdown=(f"### Relaxation of {layout.campaign}\n\n* relaxed: {summary['n_relaxed']} "
                  f"({summary['n_relaxed_now']} in this run, {n_done_before} resumed), converged: "
                  f"{summary['n_converged']}, not converged: {summary['n_failed']}\n"
                  f"* calculator: {', '.join(summary['calculators'])}; median steps {summary['median_steps']:g}, "
                  f"total relaxation time {summary['total_wall_s']:g} s\n\n#### Failure reasons\n\n{reasons}\n"
                  + inline_image(png, "steps histogram") + "#### Files\n\n"
                  + file_links({p.name: p for p in sorted(layout.relaxed.glob("part-*.parquet"))})),
        description="relax stage summary")
    return summary
