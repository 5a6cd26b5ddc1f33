"""How many of a campaign's candidates stay "stable" as the offline hull gains real competitors, and at what cost.

For a campaign whose relax stage is done (e.g. the demo run by bench_campaign.py --keep), the converged
candidates are scored against hulls of increasing completeness, all relaxed with the campaign's calculator
and relaxation settings (the demo's by default) and on one energy scale:

  old default          elemental prototypes + up to N training-split crystals, unconverged relaxations allowed
                       to be stable (what the score stage did before issue 17)
  elements             elemental ground states only
  + dataset crystals   ... plus up to N of the dataset's own crystals (any split) inside the candidates' systems
  + binary prototypes  ... plus the binary prototypes of every element pair (the new default)

Per hull: entries, relaxations it needs and their summed wall time (from the cache rows, so a warm cache still
reports the cost of building it), stable / metastable / scored counts. Prototypes go through the same cache as
the score stage (`<results_root>/_reference_cache`), so running this after the score stage relaxes nothing new.

    python benchmarks/bench_stability.py --run /tmp/demo-run/bench [--calculator chgnet] [--reference-size 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dft.batch import read_relaxed, relax_table  # noqa: E402
from dft.calculators import CalculatorConfig, energy_scale  # noqa: E402
from dft.energy_scale import on_hull_scale, plan_scales  # noqa: E402
from dft.hull import reference_from_relaxed, score_candidates  # noqa: E402
from dft.reference_cache import hull_systems  # noqa: E402
from flows.params import CampaignParams  # noqa: E402
from dft.scoring import candidate_table, choose_dataset_subset, reference_cache  # noqa: E402
from unimat_core.run_layout import RunLayout  # noqa: E402
from unimat_core.structure_table import read_structures  # noqa: E402
from unimat_core.tensor_store import training_split_of  # noqa: E402


def hull_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Converged relaxed rows of the given pieces (empty pieces skipped)."""
    table = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return table[table["converged"].astype(bool) & np.isfinite(table["energy_per_atom"].astype(float))]


def score_against(candidates: pd.DataFrame, rows: pd.DataFrame, calculator: CalculatorConfig,
                  *, converged_only: bool = True) -> dict:
    """Stable / metastable counts of `candidates` against the hull made of `rows`, on one energy scale."""
    scale = energy_scale(calculator)
    plan = plan_scales(scale, scale)
    reference, _ = on_hull_scale(reference_from_relaxed(rows, scale=scale), plan.correct_reference)
    cands = candidates.rename(columns={"formula": "composition"})
    if not converged_only:
        cands = cands.drop(columns=["converged"])  # the old behaviour: every finite energy gets flags
    cands, _ = on_hull_scale(cands, plan.correct_candidates)
    scores = score_candidates(cands, reference)
    return {"entries": len(reference), "scored": int(np.isfinite(scores["decomposition_energy"]).sum()),
            "stable": int(scores["stable"].sum()), "metastable": int(scores["metastable"].sum()),
            "relaxations": len(rows), "relax_seconds": round(float(rows["wall_time_s"].sum()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="campaign folder (<results_root>/<campaign>) with relax/ done")
    parser.add_argument("--calculator", default=None, help="default: the calculator the candidates were relaxed with")
    parser.add_argument("--reference-size", type=int, default=CampaignParams().score.reference_size)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="per-structure relaxation limit (s); default: the demo's. Keep the campaign's value: "
                             "it is part of the prototype cache key")
    parser.add_argument("--seed", type=int, default=CampaignParams().score.seed)
    args = parser.parse_args()

    run = Path(args.run).resolve()
    layout = RunLayout(run.parent, run.name)
    demo = CampaignParams().relax
    if args.time_limit is not None:
        demo = demo.model_copy(update={"time_limit_s": args.time_limit})
    candidates = candidate_table(layout)
    name = args.calculator or sorted(set(candidates["calculator"]) - {""})[0]
    calc = replace(demo.calculator_config(), name=name)
    relax = demo.relax_config()
    converged = candidates[candidates["converged"].astype(bool) & np.isfinite(candidates["energy_per_atom"])]
    formulas = converged["formula"].tolist()

    start = time.perf_counter()
    systems = hull_systems(formulas)
    elements, pairs = [s for s in systems if "-" not in s], [s for s in systems if "-" in s]
    cache = reference_cache(layout, calc, relax)
    built = cache.ensure(elements + pairs)
    all_splits = choose_dataset_subset(layout, args.reference_size, args.seed, formulas)
    training = choose_dataset_subset(layout, args.reference_size, args.seed, formulas, split=training_split_of(layout))
    dataset_dir = layout.stage_dir("score") / "bench-stability" / cache.folder.name
    wanted = sorted(set(all_splits) | set(training))
    if wanted:
        table = read_structures(layout.structures)
        relax_table(table[table["id"].isin(wanted)], dataset_dir, calculator=calc, config=relax)
    dataset = read_relaxed(dataset_dir) if wanted else pd.DataFrame()
    wall = time.perf_counter() - start

    element_rows = cache.read(elements)
    prototype_rows = cache.read(pairs)
    pick = (lambda ids: dataset[dataset["id"].isin(ids)]) if len(dataset) else (lambda ids: dataset)
    hulls = {
        "old default (elements + training split, unconverged may be stable)":
            score_against(candidates, hull_rows([element_rows, pick(training)]), calc, converged_only=False),
        "elements": score_against(candidates, hull_rows([element_rows]), calc),
        "+ dataset crystals": score_against(candidates, hull_rows([element_rows, pick(all_splits)]), calc),
        "+ binary prototypes (new default)":
            score_against(candidates, hull_rows([element_rows, pick(all_splits), prototype_rows]), calc),
    }
    # the relaxation cost counts every attempt, converged or not
    costs = {"elements": (len(element_rows), element_rows["wall_time_s"].sum()),
             "dataset": (len(pick(all_splits)), pick(all_splits)["wall_time_s"].sum() if len(dataset) else 0.0),
             "prototypes": (len(prototype_rows), prototype_rows["wall_time_s"].sum())}

    n, n_conv = len(candidates), len(converged)
    print(f"Campaign {run}: {n} relaxed candidates, {n_conv} converged; calculator {calc.name} "
          f"({energy_scale(calc)}), relax {relax}; {len(elements)} elements, {len(pairs)} pairs")
    print(f"This run: {built['n_relaxed']} prototype relaxations new, {built['n_reused']} of {built['n_systems']} "
          f"systems from the cache; {wall:.0f} s wall\n")
    print("| hull | entries | stable | metastable (<= 0.1) | scored |\n|---|---|---|---|---|")
    for label, h in hulls.items():
        print(f"| {label} | {h['entries']} | {h['stable']} / {n} | {h['metastable']} / {n} | {h['scored']} |")
    print("\n| reference piece | relaxations | summed relaxation time (s) |\n|---|---|---|")
    for label, (count, seconds) in costs.items():
        print(f"| {label} | {count} | {seconds:.0f} |")
    out = layout.stage_dir("score") / "bench-stability" / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hulls": hulls, "costs": {k: [int(c), float(s)] for k, (c, s) in costs.items()},
                               "n_candidates": n, "n_converged": n_conv, "calculator": calc.as_dict(), "relax": relax.model_dump()},
                              indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
