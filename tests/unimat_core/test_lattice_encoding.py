import numpy as np
import pytest

from unimat_core.lattice_encoding import LatticeEncoding, reduced_volume_squared


def test_round_trip_is_exact_to_float32():
    params = np.array([[3.9, 4.1, 12.5, 90.0, 95.5, 120.0], [2.48, 3.82, 5.98, 120.3, 78.0, 108.9]])
    encoding = LatticeEncoding()
    encoded = encoding.encode(params)
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(encoding.decode(encoded), params, rtol=1e-6)


def test_fit_centres_lengths_and_round_trips_dict():
    params = np.array([[4.0, 4.0, 4.0, 90, 90, 90], [4.4, 4.4, 4.4, 90, 90, 90]])
    encoding = LatticeEncoding.fit(params)
    assert abs(encoding.encode(params)[:, :3].mean()) < 1e-6
    assert LatticeEncoding.from_dict(encoding.as_dict()) == encoding


def test_invalid_scales_and_impossible_angles():
    with pytest.raises(ValueError):
        LatticeEncoding(log_length_std=0)
    assert reduced_volume_squared(np.array([[1, 1, 1, 90, 90, 90]]))[0] == pytest.approx(1.0)
    assert reduced_volume_squared(np.array([[1, 1, 1, 150, 150, 150]]))[0] < 0


def test_batched_matrices_match_pymatgen_from_parameters():
    from pymatgen.core import Lattice

    from unimat_core.lattice_encoding import lattice_matrices

    params = np.array([[3.9, 4.1, 12.5, 90.0, 95.5, 120.0], [2.48, 3.82, 5.98, 120.3, 78.0, 108.9]])
    for row, matrix in zip(params, lattice_matrices(params)):
        np.testing.assert_allclose(matrix, Lattice.from_parameters(*row).matrix, atol=1e-12)
