"""Sampler speed against quality: which sampler, step count and guidance keep a model's quality for the fewest
model calls. One checkpoint, each setting on the same seeded composition-first samples and CSP targets.

    python benchmarks/bench_sampler.py --model pretrained:perov_5 \
        --settings ddim:50:1,dpm++2m:20:0,dpm++2m:10:0 --samples 200 --csp-targets 100 --threads 1

Prints a table (sampler, steps, guidance, model calls per sample, generation s/sample, the quick quality protocol
of the learning curve: validity, COV-R/COV-P against a seeded reference subset, CSP k=1 match rate and RMSE)
and the projected time of 10,000 samples at the measured rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "runs" / "sampler"


def parse_setting(text: str) -> tuple[str, int, float, float]:
    """'sampler:steps:guidance[:noise_scale]' (noise scale 1 when left out)."""
    sampler, steps, guidance, *noise = text.split(":")
    return sampler, int(steps), float(guidance), float(noise[0]) if noise else 1.0


def measure(model: str, dataset: str, settings: list[tuple[str, int, float, float]], samples: int, csp_targets: int,
            reference_limit: int, threads: int, batch_size: int, csp_k: int = 1, metric_workers: int = 1) -> list[dict]:
    """Sample and score each setting; 0 for samples, csp_targets or reference_limit means none, all, all."""
    from unimat_core.datasets import load_bundled
    from unimat_core.metrics import MetricsConfig, evaluate_structures
    from unimat_core.metrics.csp import CSPConfig, evaluate_csp
    from unimat_core.model.checkpoint import load_model
    from unimat_core.model.device import pick_device
    from unimat_core.model.generation import GenerateConfig, generate, read_generated
    from unimat_core.model.pretrained import resolve

    pick_device("cpu", threads)
    path = resolve(model)
    loaded = load_model(path, "cpu")
    tables = load_bundled(dataset).structures
    reference = tables[tables["split"] == "test"].reset_index(drop=True)
    rows = []
    for sampler, steps, guidance, noise_scale in settings:
        name = f"{sampler}-{steps}-g{guidance:g}" + (f"-s{noise_scale:g}" if noise_scale != 1 else "")
        out_dir = RUNS / dataset / f"{name}-n{samples}"
        calls = steps * (2 if guidance else 1)  # guidance runs the model with and without the condition
        row: dict = {"model": model, "step": loaded.step, "sampler": sampler, "steps": steps, "guidance": guidance,
                     "noise_scale": noise_scale, "calls": calls, "samples": samples,
                     "reference": reference_limit or len(reference)}
        if samples:
            shutil.rmtree(out_dir, ignore_errors=True)
            start = time.perf_counter()
            generate(GenerateConfig(checkpoint=str(path), out_dir=str(out_dir), num_samples=samples,
                                    batch_size=batch_size, sampler=sampler, steps=steps, guidance=guidance,
                                    noise_scale=noise_scale, device="cpu",
                                    cpu_threads=threads), loaded=loaded)
            per_sample = (time.perf_counter() - start) / samples
            start = time.perf_counter()
            metrics = evaluate_structures(read_generated(out_dir), reference, None, MetricsConfig(
                dataset=dataset, n_workers=metric_workers, reference_limit=reference_limit or None, matching=False,
                cache_dir=str(RUNS / dataset / "cache"))).summary
            row.update(s_per_sample=round(per_sample, 4), min_per_10k=round(per_sample * 10_000 / 60, 1),
                       metrics_s=round(time.perf_counter() - start),
                       **{k: round(metrics[k], 4) for k in ("struct_validity", "comp_validity", "cov_recall",
                                                             "cov_precision", "emd_density")})
        if csp_targets >= 0:
            start = time.perf_counter()
            _, csp = evaluate_csp(loaded, reference, CSPConfig(k=csp_k, n_targets=csp_targets or None, seed=0,
                                                               sampler=sampler, steps=steps, guidance=guidance,
                                                               noise_scale=noise_scale, batch_size=batch_size,
                                                               n_workers=metric_workers))
            row.update(csp_k=csp_k, csp_targets=csp["n_targets"], csp_match=round(csp["match_rate"], 4),
                       csp_rmse=round(csp["rmse"], 4), csp_s=round(time.perf_counter() - start))
        print(json.dumps(row), flush=True)
        (RUNS / dataset).mkdir(parents=True, exist_ok=True)  # --samples 0 writes no sample folder there first
        with (RUNS / dataset / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    k = next((r["csp_k"] for r in rows if "csp_k" in r), 1)
    head = ("| sampler | steps | guidance | noise scale | model calls | min / 10k samples | struct. valid | comp. valid "
            f"| COV-R | COV-P | CSP k={k} | RMSE |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    def pct(row: dict, key: str) -> str:
        return f"{100 * row[key]:.1f} %" if key in row else "-"

    lines = [f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r.get('noise_scale', 1):g} | {r['calls']} "
             f"| {r.get('min_per_10k', '-')} "
             f"| {pct(r, 'struct_validity')} | {pct(r, 'comp_validity')} | {pct(r, 'cov_recall')} "
             f"| {pct(r, 'cov_precision')} | {pct(r, 'csp_match')} | {r.get('csp_rmse', '-')} |" for r in rows]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:perov_5")
    parser.add_argument("--dataset", default="perov_5")
    parser.add_argument("--settings", default="ddim:50:1,ddim:50:0,dpm++2m:20:0,dpm++2m:10:0",
                        help="comma-separated sampler:steps:guidance[:noise_scale]")
    parser.add_argument("--samples", type=int, default=200, help="unconditional samples (0: none)")
    parser.add_argument("--csp-targets", type=int, default=100, help="CSP test crystals (0: all, -1: no CSP)")
    parser.add_argument("--csp-k", type=int, default=1)
    parser.add_argument("--reference-limit", type=int, default=300, help="test crystals for coverage (0: all)")
    parser.add_argument("--metric-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=200)
    o = parser.parse_args()
    rows = measure(o.model, o.dataset, [parse_setting(s) for s in o.settings.split(",")], o.samples, o.csp_targets,
                   o.reference_limit, o.threads, o.batch_size, o.csp_k, o.metric_workers)
    print(table(rows))


if __name__ == "__main__":
    main()
