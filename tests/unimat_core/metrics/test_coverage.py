from __future__ import annotations

import numpy as np
import pytest

from unimat_core.metrics.coverage import coverage


def test_coverage_hand_checked():
    # 1-D fingerprints; struct cutoff 0.5, comp cutoff 1.0
    ref_s, ref_c = np.array([[0.0], [10.0]]), np.array([[0.0], [0.0]])
    gen_s, gen_c = np.array([[0.1], [5.0], [0.2]]), np.array([[0.5], [0.0], [3.0]])
    result = coverage(gen_s, gen_c, ref_s, ref_c, struct_cutoff=0.5, comp_cutoff=1.0, block=2)
    # reference 0 has gen 0 within both cutoffs; reference 10 has nothing within 0.5 in structure
    assert result["cov_recall"] == 0.5
    # gen 0: struct 0.1, comp 0.5 -> covered; gen 1: struct 5 -> not; gen 2: comp 3 -> not
    assert result["cov_precision"] == pytest.approx(1 / 3)
    assert result["amsd_recall"] == pytest.approx((0.1 + 5.0) / 2)
    assert result["amsd_precision"] == pytest.approx((0.1 + 5.0 + 0.2) / 3)


def test_precision_divides_by_all_generated_including_failures():
    ref = np.zeros((1, 2))
    result = coverage(ref, ref, ref, ref, 0.1, 0.1, n_generated=4)  # 3 generated rows had no fingerprint
    assert result["cov_recall"] == 1.0 and result["cov_precision"] == 0.25


def test_recall_and_precision_use_independent_nearest_neighbours():
    # CDVAE takes the nearest in structure and the nearest in composition separately
    ref_s, ref_c = np.array([[0.0]]), np.array([[0.0]])
    gen_s, gen_c = np.array([[0.0], [9.0]]), np.array([[9.0], [0.0]])
    assert coverage(gen_s, gen_c, ref_s, ref_c, 0.5, 0.5)["cov_recall"] == 1.0


def test_no_generated_fingerprints_gives_zero_coverage():
    ref = np.zeros((2, 3))
    result = coverage(np.zeros((0, 3)), np.zeros((0, 3)), ref, ref, 0.2, 4.0, n_generated=5)
    assert result["cov_recall"] == 0.0 and result["cov_precision"] == 0.0
