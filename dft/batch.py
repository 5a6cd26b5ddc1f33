"""The relaxation engine's file side, used by every caller (the relax stage, the score stage's reference
crystals, the discovery benchmark, Dask chunks, `relax_table` for a table in memory):

- `plan_chunks`: which ids of a structure table (a file or a folder of parts) are still to relax, in chunks,
  each with the part file it will write (ids already in a part are skipped: resume after a kill);
- `cached_calculator`: one built calculator per process and settings (CHGNet: ~1 s and a model in memory),
  borrowed by one chunk at a time;
- `relax_rows`: the one result builder: relaxed rows (structure table + `RelaxResult` columns, input
  properties kept as `input_*`), with unreadable inputs and cells beyond `max_sites` as rows with their reason;
- `relax_ids`: one chunk, written atomically to its part file (a killed chunk leaves no part).

Each chunk goes through `dft.engine.relax_structures` (batched for ML potentials: the chunk's crystals share
each model call). A structure that fails is a row with its `error`, never an exception.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dft.calculators import OUT_OF_PROCESS, BuiltCalculator, CalculatorConfig, build_calculator
from dft.engine import relax_structures
from dft.relax import RelaxConfig, RelaxResult
from unimat_core.structure_table import CORE_COLUMNS, conform, read_structure_text, validate_frame, write_structures
from unimat_core.structure_table import records_to_frame

PART_RE = re.compile(r"^part-(\d{5})\.parquet$")
RELAXED_SOURCE = "relax"


@dataclass(frozen=True)
class BatchSummary:
    out_dir: str
    parts_written: list[str]
    n_done_before: int
    n_relaxed: int
    n_converged: int
    n_failed: int  # not converged for any reason (crash, step limit, time limit); see the error column


# ---------------------------------------------------------------- part files


def part_files(folder: str | Path) -> list[Path]:
    """The `part-XXXXX.parquet` files of a folder, in order."""
    return sorted(p for p in Path(folder).glob("part-*.parquet") if PART_RE.match(p.name))


def finished_ids(out_dir: str | Path) -> set[str]:
    """Ids already relaxed (any outcome) in `out_dir`'s part files."""
    done: set[str] = set()
    for path in part_files(out_dir):
        done.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return done


def next_part_index(out_dir: str | Path) -> int:
    return max((int(PART_RE.match(p.name).group(1)) for p in part_files(out_dir)), default=-1) + 1


def read_relaxed(out_dir: str | Path) -> pd.DataFrame:
    """All relaxed rows of `out_dir`, one structure table."""
    parts = part_files(out_dir)
    if not parts:
        raise FileNotFoundError(f"no part-*.parquet in {out_dir}")
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def read_rows(source: str | Path, ids: list[str] | None = None, *, valid_only: bool = True) -> pd.DataFrame:
    """Rows of a structure table (a file, or a folder of parts) with a structure, optionally only `ids`."""
    source = Path(source)
    files = [str(p) for p in (sorted(source.glob("part-*.parquet")) if source.is_dir() else [source])]
    # one schema for all parts: a part whose optional column is empty everywhere stores it as type null
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    dataset = ds.dataset(files, format="parquet", schema=schema)
    filt = ds.field("structure").is_valid()
    if valid_only and "valid" in dataset.schema.names:
        filt &= ds.field("valid") == True  # noqa: E712 - an Arrow expression, not a Python comparison
    if ids is not None:
        filt &= ds.field("id").isin(ids)
    return dataset.to_table(filter=filt).to_pandas()


def plan_chunks(source: str | Path, out_dir: str | Path, chunk_size: int, ids: list[str] | None = None,
                done: set[str] | None = None) -> dict:
    """Chunks of ids still to relax and the part file each will write (resume = skip finished ids; `done`
    overrides the ids found in `out_dir`'s parts)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    out = Path(out_dir)
    candidates = read_rows(source, ids)["id"].tolist()
    done = done if done is not None else finished_ids(out) if out.is_dir() else set()
    todo = [i for i in candidates if i not in done]
    first = next_part_index(out)
    chunks = [todo[k:k + chunk_size] for k in range(0, len(todo), chunk_size)]
    parts = [str(out / f"part-{first + k:05d}.parquet") for k in range(len(chunks))]
    return {"chunks": chunks, "parts": parts, "n_candidates": len(candidates), "n_done_before": len(candidates) - len(todo)}


# ---------------------------------------------------------------- one calculator per process

_POOL: dict[str, list[BuiltCalculator]] = {}
_POOL_LOCK = threading.Lock()


@contextmanager
def cached_calculator(config: CalculatorConfig | BuiltCalculator) -> Iterator[BuiltCalculator | CalculatorConfig]:
    """Borrow a built calculator of this process's pool (built on first use), give it back afterwards.

    Built calculators are expensive and not thread-safe: a chunk (a thread) borrows one, so two chunks of one
    process never share one. GPAW / VASP / QE run outside this process: their config is handed through.
    """
    if isinstance(config, BuiltCalculator) or config.name in OUT_OF_PROCESS:
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


# ---------------------------------------------------------------- one result builder


def results_to_frame(rows: pd.DataFrame, results: list[RelaxResult]) -> pd.DataFrame:
    """Relaxed structures + result columns; input properties are kept with an `input_` prefix."""
    properties: dict[str, list] = {k: [r.properties()[k] for r in results] for k in results[0].properties()}
    extra = [c for c in rows.columns if c not in ("id", "formula", "reduced_formula", "chemsys", "n_sites",
                                                 "n_elements", "structure", "split", "source")]
    for column in extra:
        properties[f"input_{column}"] = rows[column].tolist()
    properties["input_source"] = rows["source"].tolist()
    return records_to_frame([r.structure for r in results], rows["id"].tolist(), split=rows["split"].tolist(),
                            source=RELAXED_SOURCE, properties=properties)


def _too_big(structure, max_sites: int | None, calculator: str) -> RelaxResult | None:
    """A recorded refusal for cells beyond `max_sites` (e.g. a barely trained model's 200-atom soup)."""
    if max_sites is None or len(structure) <= max_sites:
        return None
    return RelaxResult(structure=structure, calculator=calculator,
                       error=f"skipped: {len(structure)} sites > max_sites {max_sites}")


def _unreadable_rows(rows: pd.DataFrame, reasons: list[str], calculator: str) -> pd.DataFrame:
    """Relaxed-table rows for inputs whose structure cannot be read: no structure, the input's formula
    columns, and the reason as `error` (the columns results_to_frame gives a relaxed structure)."""
    frame = rows[list(CORE_COLUMNS)].assign(structure=None, source=RELAXED_SOURCE).reset_index(drop=True)
    failed = [RelaxResult(structure=None, calculator=calculator, error=reason).properties() for reason in reasons]
    extra = {f"input_{c}": rows[c].tolist() for c in rows.columns if c not in CORE_COLUMNS}
    return pd.concat([frame, pd.DataFrame(failed), pd.DataFrame({**extra, "input_source": rows["source"].tolist()})],
                     axis=1)


def relax_rows(rows: pd.DataFrame, calculator: CalculatorConfig | BuiltCalculator, config: RelaxConfig,
               max_sites: int | None = None) -> pd.DataFrame:
    """Relax the rows of a structure table with one engine call (batched for ML potentials), in their order.

    Unreadable structures and cells beyond `max_sites` are rows with their reason, never exceptions."""
    rows = rows.reset_index(drop=True)
    name = calculator.name
    parsed = [read_structure_text(text) for text in rows["structure"]]
    readable = [i for i, (structure, _) in enumerate(parsed) if structure is not None]
    refused = {i: r for i in readable if (r := _too_big(parsed[i][0], max_sites, name))}
    with cached_calculator(calculator) as built:
        relaxed = iter(relax_structures([parsed[i][0] for i in readable if i not in refused], built, config))
        results = [refused.get(i) or next(relaxed) for i in readable]
    unreadable = [i for i, (structure, _) in enumerate(parsed) if structure is None]
    frames = [results_to_frame(rows.iloc[readable].reset_index(drop=True), results)] if results else []
    if unreadable:  # one bad row is a row with its id and reason; the rest of the chunk is relaxed
        frames.append(_unreadable_rows(rows.iloc[unreadable], [parsed[i][1] for i in unreadable], name))
    ids = rows["id"].tolist()
    return conform(pd.concat(frames, ignore_index=True).set_index("id", drop=False).loc[ids].reset_index(drop=True))


def _counts(frame: pd.DataFrame) -> dict:
    converged = frame["converged"].astype(bool)
    return {"n": len(frame), "n_converged": int(converged.sum()), "n_failed": int((~converged).sum())}


def relax_ids(source: str | Path, ids: list[str], part: str | Path, calculator: CalculatorConfig | BuiltCalculator,
              config: RelaxConfig, max_sites: int | None = None) -> dict:
    """Relax `ids` of `source` into the part file `part` (written atomically; an existing one is kept)."""
    part = Path(part)
    if part.exists():  # finished by an earlier (retried or resumed) run
        return {"part": str(part), **_counts(pd.read_parquet(part, columns=["converged"])), "skipped": True}
    rows = read_rows(source, ids).set_index("id", drop=False).loc[ids].reset_index(drop=True)
    frame = relax_rows(rows, calculator, config, max_sites)
    write_structures(frame, part)
    return {"part": str(part), **_counts(frame), "skipped": False}


def relaxed_summary(out_dir: str | Path) -> dict:
    """Counts over every part of a relax folder, with the most common failure reasons."""
    if not part_files(out_dir):  # nothing valid was generated
        return {"out_dir": str(out_dir), "n_relaxed": 0, "n_converged": 0, "n_failed": 0, "failure_reasons": {},
                "median_steps": 0.0, "total_wall_s": 0.0, "calculators": []}
    frame = read_relaxed(out_dir)
    reasons = Counter(str(e).split(":")[0] for e in frame["error"] if e)
    return {"out_dir": str(out_dir), "n_relaxed": len(frame), "n_converged": int(frame["converged"].sum()),
            "n_failed": int((~frame["converged"].astype(bool)).sum()), "failure_reasons": dict(reasons.most_common(5)),
            "median_steps": float(frame["steps"].median()), "total_wall_s": round(float(frame["wall_time_s"].sum()), 1),
            "calculators": sorted(set(frame["calculator"]) - {""})}


# ---------------------------------------------------------------- a table in memory


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def relax_table(
    frame: pd.DataFrame,
    out_dir: str | Path,
    *,
    calculator: CalculatorConfig = CalculatorConfig(),
    config: RelaxConfig = RelaxConfig(),
    chunk_size: int = 50,
    n_workers: int = 1,
) -> BatchSummary:
    """Relax every structure of `frame` not yet in `out_dir`; one part file per finished chunk. `n_workers > 1`
    relaxes chunks in spawned worker processes (one torch thread and one cached calculator each)."""
    validate_frame(frame)
    if chunk_size < 1 or n_workers < 1:
        raise ValueError("chunk_size and n_workers must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out)
    todo = frame[~frame["id"].isin(done)]
    part = next_part_index(out)
    written: list[str] = []
    counts = {"n": 0, "n_converged": 0, "n_failed": 0}

    def write(relaxed: pd.DataFrame) -> None:
        nonlocal part
        written.append(str(write_structures(relaxed, out / f"part-{part:05d}.parquet")))
        part += 1
        for key, value in _counts(relaxed).items():
            counts[key] += value

    chunks = [todo.iloc[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    if chunks and n_workers == 1:
        for rows in chunks:
            write(relax_rows(rows, calculator, config))
    elif chunks:
        context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(1,)) as pool:
            futures = [pool.submit(relax_rows, rows, calculator, config) for rows in chunks]
            for future in as_completed(futures):
                write(future.result())
    return BatchSummary(str(out), written, len(done & set(frame["id"])), counts["n"], counts["n_converged"],
                        counts["n_failed"])
