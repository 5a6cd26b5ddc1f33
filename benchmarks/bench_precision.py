"""Where the COV-P misses of a set of generated perov_5-like samples come from.

    python benchmarks/bench_precision.py benchmarks/runs/sampler/perov_5/dpm++2m-sde-10-g0-n10000

A generated crystal is 'precise' (COV-P) when its nearest test crystal is within both CDVAE cutoffs, structure
and composition fingerprint. This splits the misses into composition-only, structure-only and both, and counts
samples and invalid structures by atoms per cell: a composition prior that proposes cell sizes the data does not
have shows up there (benchmarks/RESULTS.md, "Atoms per cell and steps").
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main() -> None:
    from unimat_core.datasets import load_bundled
    from unimat_core.metrics.analysis import analyse_structures
    from unimat_core.metrics.coverage import _nearest
    from unimat_core.metrics.evaluate import MetricsConfig, _reference_analysis
    from unimat_core.metrics.parallel import as_pool
    from unimat_core.model.generation import read_generated

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="a generation folder (part-*.parquet)")
    parser.add_argument("--dataset", default="perov_5")
    parser.add_argument("--workers", type=int, default=2)
    o = parser.parse_args()

    generated = read_generated(o.samples)
    tables = load_bundled(o.dataset).structures
    reference = tables[tables["split"] == "test"].reset_index(drop=True)
    config = MetricsConfig(dataset=o.dataset, n_workers=o.workers)
    pool, _ = as_pool(o.workers)
    ref, _ = _reference_analysis(reference, config, pool)
    gen = analyse_structures(generated["structure"].tolist(), workers=pool)
    struct_cutoff, comp_cutoff = config.cutoffs
    ok, ref_ok = gen.frame["fingerprint_ok"].to_numpy(), ref.frame["fingerprint_ok"].to_numpy()
    struct_near = np.full(len(generated), np.inf)
    comp_near = np.full(len(generated), np.inf)
    struct_near[ok], _ = _nearest(gen.struct_fp[ok], ref.struct_fp[ref_ok], 2048)
    comp_near[ok], _ = _nearest(gen.comp_fp[ok], ref.comp_fp[ref_ok], 2048)
    struct_fit, comp_fit = struct_near <= struct_cutoff, comp_near <= comp_cutoff
    n = len(generated)
    print(f"{n} samples, {ok.sum()} fingerprinted; COV-P {np.mean(struct_fit & comp_fit):.4f}\n")
    print("| miss | samples | share |\n|---|---|---|")
    for label, miss in (("composition only", ~comp_fit & struct_fit & ok), ("structure only", comp_fit & ~struct_fit & ok),
                        ("both", ~comp_fit & ~struct_fit & ok), ("no fingerprint", ~ok)):
        print(f"| {label} | {miss.sum()} | {miss.mean():.2%} |")
    frame = pd.DataFrame({"atoms": generated["n_sites"].to_numpy(), "valid": gen.frame["valid_struct"].to_numpy(),
                          "precise": struct_fit & comp_fit})
    print("\n| atoms per cell | samples | struct. valid | precise |\n|---|---|---|---|")
    for atoms, group in frame.groupby("atoms"):
        print(f"| {atoms} | {len(group)} | {group['valid'].mean():.1%} | {group['precise'].mean():.1%} |")


if __name__ == "__main__":
    main()
