from __future__ import annotations

import numpy as np
import pytest

from unimat_core.metrics.distributions import emd, eval_subset


def test_emd_of_identical_and_shifted_distributions():
    values = [1.0, 2.0, 4.0]
    assert emd(values, values) == 0.0
    assert emd([v + 1.5 for v in values], values) == pytest.approx(1.5)


def test_emd_ignores_nan_and_is_nan_when_empty():
    assert emd([1.0, np.nan], [1.0]) == 0.0
    assert np.isnan(emd([], [1.0]))


def test_eval_subset_is_seeded_and_only_valid():
    valid = np.array([True, False] * 50)
    a, b = eval_subset(valid, 10, seed=3), eval_subset(valid, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 10 and valid[a].all()
    assert not np.array_equal(a, eval_subset(valid, 10, seed=4))


def test_eval_subset_takes_all_valid_when_fewer_than_n_eval():
    np.testing.assert_array_equal(eval_subset(np.array([True, False, True]), 1000, seed=0), [0, 2])
