"""Crystal structure prediction (CSP) metrics, as DiffCSP reports them.

For every reference crystal, k structures are sampled with its composition given; the crystal
counts as matched when at least one sample matches it under
`StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)`. Match rate = matched / reference crystals;
RMSE = the matcher's rms displacement (normalised by (V/N)^(1/3)) of the best match, averaged over
matched crystals. A sample that failed to decode is a miss, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from unimat_core import atomic
from unimat_core.metrics.parallel import WorkerPool, as_pool
from unimat_core.model.config import CSPConfig

CSP_MATCHER = {"stol": 0.5, "ltol": 0.3, "angle_tol": 10.0}


def choose_targets(reference: pd.DataFrame, n_targets: int | None, seed: int) -> pd.DataFrame:
    """The seeded subset of reference rows (id, structure) that CSP predicts; all rows when n_targets is None."""
    rows = reference[reference["structure"].notna()]
    if n_targets is not None and n_targets < len(rows):
        rows = rows.sample(n=n_targets, random_state=seed)
    return rows.reset_index(drop=True)


def _best_match(job: tuple[str, list[str | None]]) -> tuple[bool, float]:
    """(matched, best normalised rms) of one reference against its samples."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from unimat_core.structure_table import structure_from_json

    reference_text, sample_texts = job
    matcher = StructureMatcher(**CSP_MATCHER)
    reference = structure_from_json(reference_text)
    best = float("inf")
    for text in sample_texts:
        if not text:
            continue
        try:
            rms = matcher.get_rms_dist(structure_from_json(text), reference)
        except Exception:  # odd sampled cells make the matcher fail: that sample is a miss
            rms = None
        if rms is not None:
            best = min(best, float(rms[0]))
    return best < float("inf"), best


def match_predictions(reference_texts: Sequence[str], samples: Sequence[Sequence[str | None]],
                      workers: int | WorkerPool = 1) -> pd.DataFrame:
    """Per reference crystal: matched and best rms over its samples (JSON structures, None = failed decode)."""
    if len(reference_texts) != len(samples):
        raise ValueError(f"{len(reference_texts)} references but {len(samples)} sample lists")
    jobs = list(zip(reference_texts, [list(s) for s in samples]))
    pool, owned = as_pool(workers)
    try:
        results = pool.map(_best_match, jobs, kind="match", n_items=sum(len(s) for s in samples))
    finally:
        if owned:
            pool.close()
    matched = [m for m, _ in results]
    rms = [r if m else np.nan for m, r in results]
    return pd.DataFrame({"matched": matched, "rms": rms, "n_samples": [len(s) for s in samples]})


def summarise(per_target: pd.DataFrame, k: int) -> dict:
    matched = per_target["matched"].astype(bool)
    return {"k": k, "n_targets": int(len(per_target)), "match_rate": float(matched.mean()) if len(per_target) else 0.0,
            "rmse": float(per_target.loc[matched, "rms"].mean()) if matched.any() else float("nan")}


def predict_structures(loaded, targets: pd.DataFrame, config: CSPConfig, progress=None) -> list[list[str | None]]:
    """k conditional samples (JSON, None where decoding failed) of each target's cell composition."""
    import torch

    from unimat_core.model.generation import sample_batch
    from unimat_core.model.lanes import map_in_lanes, sampling_lanes
    from unimat_core.representation import decode
    from unimat_core.structure_table import structure_from_json, structure_to_json

    config = loaded.recommended(config)
    formulas = [structure_from_json(t).composition.formula for t in targets["structure"]]
    flat = [f for f in formulas for _ in range(config.k)]
    chunks = [flat[start : start + config.batch_size] for start in range(0, len(flat), config.batch_size)]

    def predict_chunk(b: int) -> list[str | None]:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + b)
        coords, lattice = sample_batch(loaded, chunks[b], sampler=config.sampler, steps=config.steps,
                                       guidance=config.guidance, noise_scale=config.noise_scale, generator=generator)
        return [structure_to_json(c.structure) if c.valid else None for c in decode(coords, lattice, loaded.spec)]

    out: list[str | None] = []
    lanes = sampling_lanes(loaded.device)
    for predicted in map_in_lanes(predict_chunk, range(len(chunks)), lanes):
        out += predicted
        if progress is not None:
            progress(len(out), len(flat))
    return [out[i * config.k : (i + 1) * config.k] for i in range(len(formulas))]


def evaluate_csp(loaded, reference: pd.DataFrame, config: CSPConfig, progress=None) -> tuple[pd.DataFrame, dict]:
    """Sample k structures per (seeded subset of the) reference crystals and match them; (per-target, summary)."""
    config = loaded.recommended(config)
    targets = choose_targets(reference, config.n_targets, config.seed)
    samples = predict_structures(loaded, targets, config, progress)
    per_target = match_predictions(list(targets["structure"]), samples, config.n_workers)
    per_target.insert(0, "id", targets["id"].to_numpy())
    if "formula" in targets:
        per_target.insert(1, "formula", targets["formula"].to_numpy())
    return per_target, {**summarise(per_target, config.k), "guidance": config.guidance, "steps": config.steps,
                        "noise_scale": config.noise_scale}


def _guidance(summary: dict) -> str:
    if "guidance" not in summary:
        return ""
    noise = summary.get("noise_scale", 1.0)
    noise_note = f", noise scale {noise:g}" if noise != 1 else ""
    return f" ({summary['steps']} steps, guidance {summary['guidance']:g}{noise_note})"


def markdown(summary: dict, dataset: str | None = None) -> str:
    """The CSP result as a small table, with DiffCSP's published numbers beside it where known."""
    from unimat_core.metrics.cdvae_constants import CSP_PUBLISHED

    published = CSP_PUBLISHED.get((dataset or "", summary["k"]), {})
    lines = [f"## Crystal structure prediction (k = {summary['k']}, {summary['n_targets']} test crystals"
             f"{', ' + dataset if dataset else ''})", "",
             "| model | match rate | RMSE |", "|---|---|---|",
             f"| this model{_guidance(summary)} | {100 * summary['match_rate']:.2f} % | {summary['rmse']:.4f} |"]
    lines += [f"| {name} (published) | {rate:.2f} % | {rmse if rmse is not None else 'n/a'} |"
              for name, (rate, rmse) in published.items()]
    lines += ["", f"StructureMatcher(stol={CSP_MATCHER['stol']}, ltol={CSP_MATCHER['ltol']}, "
                  f"angle_tol={CSP_MATCHER['angle_tol']}); RMSE normalised by (V/N)^(1/3), averaged over matches."]
    return "\n".join(lines)


def write_csp(per_target: pd.DataFrame, summary: dict, out_dir, dataset: str | None = None) -> dict:
    """per_target.parquet, summary.json and summary.md in `out_dir` (each written whole, then renamed)."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_target": out / "per_target.parquet", "summary": out / "summary.json", "markdown": out / "summary.md"}
    with atomic.atomic_path(paths["per_target"]) as tmp:
        per_target.to_parquet(tmp, index=False)
    atomic.write_text(paths["summary"], json.dumps(summary, indent=1))
    atomic.write_text(paths["markdown"], markdown(summary, dataset) + "\n")
    return {key: str(path) for key, path in paths.items()}
