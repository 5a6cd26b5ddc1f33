"""Relax a structure table in chunks, each written to `<out_dir>/part-XXXXX.parquet` as it finishes.

Re-running with the same `out_dir` skips every id already in a part file (resume after a kill:
parts are written atomically, so a killed chunk is simply redone). A structure that fails is a
row with its `error`, never an exception. Each chunk goes through `dft.engine.relax_structures`
(batched for ML potentials: the chunk's crystals share each model call). `n_workers > 1` relaxes
chunks in parallel worker processes (spawned, one torch thread each, each building its calculator
once), which is how one machine's cores are all used.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from dft.calculators import BuiltCalculator, CalculatorConfig, build_once
from dft.engine import relax_structures
from dft.relax import RelaxConfig, RelaxResult
from unimat_core.structure_table import (
    records_to_frame,
    structure_from_json,
    validate_frame,
    write_structures,
)

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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def finished_ids(out_dir: str | Path) -> set[str]:
    """Ids already relaxed (any outcome) in `out_dir`'s part files."""
    done: set[str] = set()
    for path in sorted(Path(out_dir).glob("part-*.parquet")):
        if PART_RE.match(path.name):
            done.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return done


def _next_part_index(out_dir: Path) -> int:
    indices = [int(m.group(1)) for p in out_dir.glob("part-*.parquet") if (m := PART_RE.match(p.name))]
    return max(indices, default=-1) + 1


def read_relaxed(out_dir: str | Path) -> pd.DataFrame:
    """All relaxed rows of `out_dir`, one structure table."""
    parts = sorted(p for p in Path(out_dir).glob("part-*.parquet") if PART_RE.match(p.name))
    if not parts:
        raise FileNotFoundError(f"no part-*.parquet in {out_dir}")
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


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


def _relax_rows(rows: pd.DataFrame, calculator: CalculatorConfig | BuiltCalculator, config: RelaxConfig
                ) -> list[RelaxResult]:
    return relax_structures([structure_from_json(text) for text in rows["structure"]], calculator, config)


# worker-process state: one calculator per process, built once
_WORKER_CALC: CalculatorConfig | BuiltCalculator | None = None


def _init_worker(calculator: CalculatorConfig, threads: int) -> None:
    global _WORKER_CALC
    import torch

    torch.set_num_threads(threads)
    _WORKER_CALC = build_once(calculator)


def _worker_relax(rows: pd.DataFrame, config: RelaxConfig) -> list[RelaxResult]:
    assert _WORKER_CALC is not None
    return _relax_rows(rows, _WORKER_CALC, config)


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


def relax_table(
    frame: pd.DataFrame,
    out_dir: str | Path,
    *,
    calculator: CalculatorConfig = CalculatorConfig(),
    config: RelaxConfig = RelaxConfig(),
    chunk_size: int = 50,
    n_workers: int = 1,
) -> BatchSummary:
    """Relax every structure of `frame` not yet in `out_dir`; one part file per finished chunk."""
    validate_frame(frame)
    if chunk_size < 1 or n_workers < 1:
        raise ValueError("chunk_size and n_workers must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out)
    todo = frame[~frame["id"].isin(done)]
    part = _next_part_index(out)
    written: list[str] = []
    counts = {"relaxed": 0, "converged": 0, "failed": 0}

    def write(rows: pd.DataFrame, results: list[RelaxResult]) -> None:
        nonlocal part
        path = write_structures(results_to_frame(rows, results), out / f"part-{part:05d}.parquet")
        written.append(str(path))
        part += 1
        counts["relaxed"] += len(results)
        counts["converged"] += sum(r.converged for r in results)
        counts["failed"] += sum(not r.converged for r in results)

    if len(todo) and n_workers == 1:
        built = build_once(calculator)
        for rows in _chunks(todo, chunk_size):
            write(rows, _relax_rows(rows, built, config))
    elif len(todo):
        context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker,
                                 initargs=(calculator, 1)) as pool:
            futures = {pool.submit(_worker_relax, rows, config): rows for rows in _chunks(todo, chunk_size)}
            for future in as_completed(futures):
                write(futures[future], future.result())
    return BatchSummary(str(out), written, len(done & set(frame["id"])), counts["relaxed"],
                        counts["converged"], counts["failed"])
