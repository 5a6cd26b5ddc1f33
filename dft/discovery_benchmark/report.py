"""Scoring of the discovery benchmark: how fast does each method find the known ground state?

Input: one row per relaxation, columns
    method            e.g. "unimat" or "random"
    composition       target cell formula
    trial             0-based order in which the method proposed it
    energy_per_atom   after relaxation (eV/atom); NaN when the relaxation failed
    matches_known     relaxed structure matches the known structure (StructureMatcher)
    seconds           compute time of proposing + relaxing this candidate
and one reference energy per composition (the known structure relaxed with the same calculator).

Everything here is plain pandas so the numbers can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from io import BytesIO

import numpy as np
import pandas as pd

RESULT_COLUMNS = ("method", "composition", "trial", "energy_per_atom", "matches_known", "seconds")
DEFAULT_KS = (1, 2, 5, 10, 20, 50, 100)


def _check(results: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"discovery results lack column(s) {missing}")
    return results.sort_values(["method", "composition", "trial"]).reset_index(drop=True)


def best_after_k(results: pd.DataFrame, reference: Mapping[str, float], ks: Iterable[int] = DEFAULT_KS) -> pd.DataFrame:
    """Lowest energy found within the first k relaxations, minus the reference (eV/atom), per method/composition."""
    results = _check(results)
    rows = []
    for (method, composition), group in results.groupby(["method", "composition"], sort=True):
        running = group["energy_per_atom"].fillna(np.inf).cummin().to_numpy()
        for k in ks:
            if k <= len(running):
                best = running[k - 1]
                rows.append({"method": method, "composition": composition, "k": k,
                             "best_energy_per_atom": best if np.isfinite(best) else np.nan,
                             "above_reference": best - reference[composition] if np.isfinite(best) else np.nan})
    return pd.DataFrame(rows)


def relaxations_to_reach(results: pd.DataFrame, reference: Mapping[str, float], tolerance: float = 0.010) -> pd.DataFrame:
    """1-based count of relaxations until one lands within `tolerance` eV/atom of the reference (NaN: never)."""
    results = _check(results)
    rows = []
    for (method, composition), group in results.groupby(["method", "composition"], sort=True):
        hit = np.flatnonzero(group["energy_per_atom"].to_numpy() <= reference[composition] + tolerance)
        rows.append({"method": method, "composition": composition, "budget": len(group),
                     "relaxations_to_reach": float(hit[0] + 1) if len(hit) else np.nan,
                     "match_rate": float(group["matches_known"].mean()),
                     "failed": int(group["energy_per_atom"].isna().sum()),
                     "seconds": float(group["seconds"].sum())})
    return pd.DataFrame(rows)


def summarise(per_composition: pd.DataFrame, challenger: str = "unimat", baseline: str = "random") -> pd.DataFrame:
    """Per method: reached fraction, median/mean relaxations to reach, match rate, compute time; plus head-to-head wins.

    A composition not reached counts as budget + 1 relaxations for the head-to-head comparison.
    """
    table = per_composition.copy()
    table["effective"] = table["relaxations_to_reach"].fillna(table["budget"] + 1)
    rows = []
    for method, group in table.groupby("method", sort=True):
        rows.append({"method": method, "compositions": len(group),
                     "reached": int(group["relaxations_to_reach"].notna().sum()),
                     "median_relaxations_to_reach": float(group["effective"].median()),
                     "mean_relaxations_to_reach": float(group["effective"].mean()),
                     "match_rate": float(group["match_rate"].mean()),
                     "total_seconds": float(group["seconds"].sum())})
    summary = pd.DataFrame(rows)
    pivot = table.pivot(index="composition", columns="method", values="effective")
    if {challenger, baseline} <= set(pivot.columns):
        diff = pivot[baseline] - pivot[challenger]
        summary.attrs["head_to_head"] = {
            "challenger_fewer": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "baseline_fewer": int((diff < 0).sum()),
            "median_saving": float(diff.median()), "iqr_saving": [float(diff.quantile(0.25)), float(diff.quantile(0.75))],
        }
    return summary


# Two lowest energies closer than this (eV/atom) are the same structure found twice, not a reduction.
TIE = 0.001


def lowest_per_composition(results: pd.DataFrame, reference: Mapping[str, float] | None = None,
                           challenger: str = "unimat", baseline: str = "random") -> pd.DataFrame:
    """The UniMat paper's per-composition table: for each composition, per method, whether any relaxation
    converged and the lowest energy per atom found (and its height above `reference`, when given), then
    `difference` = baseline's lowest - challenger's lowest (positive: the challenger went lower; NaN when
    either found nothing).

    `converged` (optional column) says which relaxations converged; without it an energy counts as converged.
    """
    results = _check(results)
    energy = results["energy_per_atom"].astype(float)
    converged = results["converged"].astype(bool) if "converged" in results else energy.notna()
    frame = results.assign(energy=energy.where(np.isfinite(energy)), converged_flag=converged)
    grouped = frame.groupby(["composition", "method"], sort=True)
    table = pd.DataFrame({"converged": grouped["converged_flag"].any(), "lowest": grouped["energy"].min()}).unstack()
    out = pd.DataFrame(index=table.index)
    for method in (challenger, baseline):
        if ("lowest", method) not in table.columns:
            raise ValueError(f"discovery results have no rows of method {method!r}")
        out[f"converged_{method}"] = table[("converged", method)].fillna(False).astype(bool)
        out[f"lowest_{method}"] = table[("lowest", method)].astype(float)
        if reference is not None:
            out[f"above_reference_{method}"] = out[f"lowest_{method}"] - out.index.map(reference).astype(float)
    out["difference"] = out[f"lowest_{baseline}"] - out[f"lowest_{challenger}"]
    return out.reset_index()


def paper_metrics(lowest: pd.DataFrame, challenger: str = "unimat", baseline: str = "random",
                  tie: float = TIE) -> dict:
    """The UniMat paper's three numbers (its AIRSS comparison) from `lowest_per_composition`:

    - convergence rate per method: share of compositions with at least one converged relaxation
      (paper: AIRSS 0.55, UniMat 0.81);
    - mean (and median) difference of the lowest energies, baseline - challenger, over the compositions
      where both methods have an energy (paper: UniMat 0.68 eV/atom lower on average);
    - reduction rate: share of those compositions where the challenger's lowest is below the baseline's by
      more than `tie` (paper: 0.8). Ties, and compositions where only one method found an energy, are
      counted separately rather than folded in.
    """
    n = len(lowest)
    both = lowest[lowest[f"lowest_{challenger}"].notna() & lowest[f"lowest_{baseline}"].notna()]
    difference = both["difference"]
    only = {m: int((lowest[f"lowest_{m}"].notna() & lowest[f"lowest_{o}"].isna()).sum())
            for m, o in ((challenger, baseline), (baseline, challenger))}
    return {
        "compositions": n,
        "convergence_rate": {m: float(lowest[f"converged_{m}"].mean()) if n else float("nan")
                             for m in (challenger, baseline)},
        "compared": len(both),
        "reduced": int((difference > tie).sum()), "ties": int((difference.abs() <= tie).sum()),
        "increased": int((difference < -tie).sum()),
        "reduction_rate": float((difference > tie).mean()) if len(both) else float("nan"),
        "mean_difference": float(difference.mean()) if len(both) else float("nan"),
        "median_difference": float(difference.median()) if len(both) else float("nan"),
        f"only_{challenger}": only[challenger], f"only_{baseline}": only[baseline],
        "challenger": challenger, "baseline": baseline, "tie": tie,
    }


def paper_markdown(metrics: dict, lowest: pd.DataFrame) -> str:
    """The paper-metrics section of report.md: the three numbers beside the paper's, then the per-composition table."""
    c, b = metrics["challenger"], metrics["baseline"]
    rate = metrics["convergence_rate"]
    lines = ["## Paper metrics (UniMat vs AIRSS protocol)", "",
             "As in the UniMat paper's AIRSS comparison (same calculator and number of relaxations per composition "
             "for both methods): convergence rate = share of compositions with at least one converged relaxation; "
             f"lowest energy per composition and method; reduction rate = share of compositions (where both have an "
             f"energy) whose {c} lowest is below the {b} lowest by more than {metrics['tie'] * 1000:.0f} meV/atom.", "",
             "| metric | this run | paper (DFT, 100 per composition) |", "|---|---|---|",
             f"| convergence rate {b} | {rate[b]:.2f} | AIRSS 0.55 |",
             f"| convergence rate {c} | {rate[c]:.2f} | UniMat 0.81 |",
             f"| reduction rate ({metrics['reduced']} of {metrics['compared']}; ties {metrics['ties']}, higher "
             f"{metrics['increased']}) | {metrics['reduction_rate']:.2f} | 0.80 |",
             f"| mean lowest-energy difference {b} - {c} (eV/atom) | {metrics['mean_difference']:.3f} | 0.68 |",
             f"| median lowest-energy difference (eV/atom) | {metrics['median_difference']:.3f} | - |", ""]
    if metrics[f"only_{c}"] or metrics[f"only_{b}"]:
        lines += [f"Energy found by one method only: {c} {metrics[f'only_{c}']}, {b} {metrics[f'only_{b}']} "
                  "compositions (not in the reduction rate).", ""]
    lines += ["Lowest energy per atom per composition (eV/atom; difference > 0: " + c + " lower):", "",
              lowest.to_markdown(index=False, floatfmt=".4g"), ""]
    return "\n".join(lines)


def ks_up_to(budget: int, ks: Iterable[int] = DEFAULT_KS) -> tuple[int, ...]:
    """The k values worth reporting for a budget: the standard ones below it, and the budget itself."""
    return tuple(sorted({k for k in ks if k <= budget} | {budget}))


def curve_summary(curves: pd.DataFrame, tolerance: float = 0.010) -> pd.DataFrame:
    """Over compositions, per method and k: median / mean best energy above the reference (meV/atom) and
    the fraction of compositions already within `tolerance` (a composition with nothing relaxed yet counts as not)."""
    rows = []
    for (method, k), group in curves.groupby(["method", "k"], sort=True):
        above = group["above_reference"]
        rows.append({"method": method, "k": int(k), "compositions": len(group),
                     "median_above_meV": float(above.median() * 1000), "mean_above_meV": float(above.mean() * 1000),
                     "reached_fraction": float((above <= tolerance).mean())})
    return pd.DataFrame(rows)


def markdown_report(summary: pd.DataFrame, per_composition: pd.DataFrame, tolerance: float = 0.010,
                    curves: pd.DataFrame | None = None, reference_label: str = "the known structure's energy") -> str:
    lines = ["# Discovery benchmark: conditional UniMat vs random structure search", "",
             f"Reached = a relaxation within {tolerance * 1000:.0f} meV/atom of {reference_label} "
             "(same calculator).", "", summary.to_markdown(index=False, floatfmt=".3g"), ""]
    head = summary.attrs.get("head_to_head")
    if head:
        lines += [f"Head to head over {sum(head[k] for k in ('challenger_fewer', 'ties', 'baseline_fewer'))} compositions: "
                  f"UniMat needed fewer relaxations for {head['challenger_fewer']}, the same for {head['ties']}, more for "
                  f"{head['baseline_fewer']}; median saving {head['median_saving']:.1f} relaxations "
                  f"(IQR {head['iqr_saving'][0]:.1f} to {head['iqr_saving'][1]:.1f}).", ""]
    if curves is not None and len(curves):
        table = curve_summary(curves, tolerance)
        lines += ["## Lowest energy found after k relaxations", "",
                  f"Best energy per atom among the first k candidates, above {reference_label} (meV/atom), "
                  "over compositions; reached = fraction of compositions within the tolerance.", "",
                  table.to_markdown(index=False, floatfmt=".3g"), ""]
    lines += ["## Per composition", "", per_composition.to_markdown(index=False, floatfmt=".3g")]
    return "\n".join(lines) + "\n"


def convergence_plot(curves: pd.DataFrame) -> bytes:
    """PNG: median (and quartiles) over compositions of best-energy-above-reference vs k, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, group in curves.groupby("method", sort=True):
        stats = group.groupby("k")["above_reference"].quantile([0.25, 0.5, 0.75]).unstack()
        ax.plot(stats.index, stats[0.5] * 1000, marker="o", label=method)
        ax.fill_between(stats.index, stats[0.25] * 1000, stats[0.75] * 1000, alpha=0.2)
    ks = sorted(curves["k"].unique()) if len(curves) else [1]
    ax.set_xlim(ks[0] * 0.9, ks[-1] * 1.1)  # explicit: a method with nothing relaxed leaves no data to autoscale
    ax.set_xscale("log")
    ax.set_xlabel("relaxations k")
    ax.set_ylabel("best energy above known (meV/atom)")
    ax.axhline(10, color="grey", lw=0.8, ls="--")
    ax.legend()
    ax.set_title("Lowest energy found after k relaxations (median, IQR)")
    buffer = BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
