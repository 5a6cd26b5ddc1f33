import numpy as np
import pandas as pd
import pytest

from dft.discovery_benchmark.report import (
    best_after_k,
    convergence_plot,
    lowest_per_composition,
    markdown_report,
    paper_markdown,
    paper_metrics,
    relaxations_to_reach,
    summarise,
)

REFERENCE = {"SrTiO3": -8.000, "BaZrO3": -9.000}


def toy_results() -> pd.DataFrame:
    """Hand-made run: UniMat hits SrTiO3 at trial 2 and BaZrO3 at trial 1; random needs 4 and never."""
    rows = []
    energies = {
        ("unimat", "SrTiO3"): [-7.90, -7.995, -7.80, -7.99],
        ("unimat", "BaZrO3"): [-8.995, np.nan, -8.90, -8.80],
        ("random", "SrTiO3"): [-7.50, -7.70, -7.60, -7.991],
        ("random", "BaZrO3"): [-8.50, -8.60, -8.95, -8.70],
    }
    for (method, composition), values in energies.items():
        for trial, energy in enumerate(values):
            rows.append({"method": method, "composition": composition, "trial": trial, "energy_per_atom": energy,
                         "matches_known": bool(np.isfinite(energy) and energy <= REFERENCE[composition] + 0.01),
                         "seconds": 1.5})
    return pd.DataFrame(rows)


def test_relaxations_to_reach_counts_by_hand():
    table = relaxations_to_reach(toy_results(), REFERENCE).set_index(["method", "composition"])
    assert table.loc[("unimat", "SrTiO3"), "relaxations_to_reach"] == 2
    assert table.loc[("unimat", "BaZrO3"), "relaxations_to_reach"] == 1
    assert table.loc[("random", "SrTiO3"), "relaxations_to_reach"] == 4
    assert np.isnan(table.loc[("random", "BaZrO3"), "relaxations_to_reach"])
    assert table.loc[("unimat", "BaZrO3"), "failed"] == 1
    assert table.loc[("unimat", "SrTiO3"), "match_rate"] == pytest.approx(0.5)
    assert table.loc[("random", "SrTiO3"), "seconds"] == pytest.approx(6.0)


def test_best_after_k_is_a_running_minimum():
    curves = best_after_k(toy_results(), REFERENCE, ks=(1, 2, 4, 10)).set_index(["method", "composition", "k"])
    assert curves.loc[("random", "SrTiO3", 1), "above_reference"] == pytest.approx(0.5)
    assert curves.loc[("random", "SrTiO3", 2), "above_reference"] == pytest.approx(0.3)
    assert curves.loc[("random", "SrTiO3", 4), "above_reference"] == pytest.approx(0.009)
    assert curves.loc[("unimat", "BaZrO3", 2), "above_reference"] == pytest.approx(0.005)  # the NaN does not reset it
    assert ("unimat", "SrTiO3", 10) not in curves.index  # beyond the budget


def test_summary_head_to_head_and_report():
    per_composition = relaxations_to_reach(toy_results(), REFERENCE)
    summary = summarise(per_composition)
    by_method = summary.set_index("method")
    assert by_method.loc["unimat", "reached"] == 2 and by_method.loc["random", "reached"] == 1
    assert by_method.loc["unimat", "median_relaxations_to_reach"] == pytest.approx(1.5)
    assert by_method.loc["random", "median_relaxations_to_reach"] == pytest.approx(4.5)  # (4 + 5) / 2: never = budget + 1
    head = summary.attrs["head_to_head"]
    assert head["challenger_fewer"] == 2 and head["baseline_fewer"] == 0 and head["median_saving"] == pytest.approx(3.0)
    report = markdown_report(summary, per_composition)
    assert "UniMat needed fewer relaxations for 2" in report and "| SrTiO3" in report
    png = convergence_plot(best_after_k(toy_results(), REFERENCE, ks=(1, 2, 4)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="seconds"):
        relaxations_to_reach(toy_results().drop(columns=["seconds"]), REFERENCE)


def test_curve_summary_and_ks_for_a_budget():
    from dft.discovery_benchmark.report import curve_summary, ks_up_to

    assert ks_up_to(20) == (1, 2, 5, 10, 20) and ks_up_to(3) == (1, 2, 3)
    curves = best_after_k(toy_results(), REFERENCE, ks=ks_up_to(4))
    table = curve_summary(curves).set_index(["method", "k"])
    # random after 4: SrTiO3 at +9 meV, BaZrO3 at +50 meV; after 1: +500 and +500
    assert table.loc[("random", 4), "median_above_meV"] == pytest.approx((9 + 50) / 2)
    assert table.loc[("random", 4), "reached_fraction"] == pytest.approx(0.5)
    assert table.loc[("unimat", 1), "reached_fraction"] == pytest.approx(0.5)  # BaZrO3 at +5 meV on trial 1
    assert table.loc[("unimat", 2), "reached_fraction"] == pytest.approx(1.0)
    per_composition = relaxations_to_reach(toy_results(), REFERENCE)
    report = markdown_report(summarise(per_composition), per_composition, curves=curves)
    assert "Lowest energy found after k relaxations" in report and "median_above_meV" in report


def test_plot_survives_a_method_with_no_energy_yet():
    curves = best_after_k(toy_results(), REFERENCE, ks=(1, 2))
    curves["above_reference"] = np.nan
    assert convergence_plot(curves)[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_metrics_by_hand():
    """toy_results: lowest SrTiO3 unimat -7.995 / random -7.991 (difference 0.004: reduced); lowest BaZrO3
    unimat -8.995 / random -8.95 (0.045: reduced). Then a third composition where random goes lower and a fourth
    where only random converged, with unconverged relaxations marked."""
    results = toy_results()
    results["converged"] = results["energy_per_atom"].notna()
    extra = []
    for method, values, converged in (("unimat", [-5.00, -5.10], [True, True]), ("random", [-5.30, -5.2], [True, True]),
                                      ("unimat", [np.nan, np.nan], [False, False]),
                                      ("random", [-4.0, np.nan], [True, False])):
        composition = "MgO" if len(extra) < 4 else "NaCl"
        for trial, (energy, ok) in enumerate(zip(values, converged)):
            extra.append({"method": method, "composition": composition, "trial": trial, "energy_per_atom": energy,
                          "matches_known": False, "seconds": 1.0, "converged": ok})
    results = pd.concat([results, pd.DataFrame(extra)], ignore_index=True)
    reference = {**REFERENCE, "MgO": -5.2, "NaCl": -4.1}
    lowest = lowest_per_composition(results, reference).set_index("composition")
    assert lowest.loc["SrTiO3", "lowest_unimat"] == pytest.approx(-7.995)
    assert lowest.loc["SrTiO3", "difference"] == pytest.approx(0.004)
    assert lowest.loc["BaZrO3", "above_reference_random"] == pytest.approx(0.05)
    assert lowest.loc["MgO", "difference"] == pytest.approx(-0.2)
    assert np.isnan(lowest.loc["NaCl", "lowest_unimat"]) and not lowest.loc["NaCl", "converged_unimat"]
    assert lowest.loc["NaCl", "converged_random"]

    metrics = paper_metrics(lowest.reset_index())
    assert metrics["compositions"] == 4 and metrics["compared"] == 3
    assert metrics["convergence_rate"] == {"unimat": pytest.approx(0.75), "random": pytest.approx(1.0)}
    assert (metrics["reduced"], metrics["ties"], metrics["increased"]) == (2, 0, 1)
    assert metrics["reduction_rate"] == pytest.approx(2 / 3)
    assert metrics["mean_difference"] == pytest.approx((0.004 + 0.045 - 0.2) / 3)
    assert metrics["median_difference"] == pytest.approx(0.004)
    assert metrics["only_random"] == 1 and metrics["only_unimat"] == 0

    # a difference within the tie tolerance is a tie, not a reduction
    strict = paper_metrics(lowest.reset_index(), tie=0.005)
    assert (strict["reduced"], strict["ties"], strict["increased"]) == (1, 1, 1)
    text = paper_markdown(metrics, lowest.reset_index())
    assert "| reduction rate (2 of 3; ties 0, higher 1) | 0.67 | 0.80 |" in text
    assert "| convergence rate unimat | 0.75 | UniMat 0.81 |" in text and "| convergence rate random | 1.00 | AIRSS 0.55 |" in text
    assert "one method only: unimat 0, random 1 compositions" in text


def test_paper_metrics_without_converged_column_count_energies_and_name_a_missing_method():
    lowest = lowest_per_composition(toy_results())
    assert lowest["converged_unimat"].all() and "above_reference_unimat" not in lowest
    assert paper_metrics(lowest)["convergence_rate"]["random"] == 1.0
    with pytest.raises(ValueError, match="no rows of method 'airss'"):
        lowest_per_composition(toy_results(), baseline="airss")
