from __future__ import annotations

import numpy as np
from pymatgen.core import Composition

from tests.unimat_core.metrics.conftest import cubic_perovskite, rocksalt
from unimat_core.metrics.cdvae_constants import COMP_SCALER_MEANS, COMP_SCALER_STDS
from unimat_core.metrics.fingerprints import (
    N_COMP_FEATURES,
    N_STRUCT_FEATURES,
    composition_fingerprint,
    scale_composition,
    structure_fingerprint,
)


def test_structure_fingerprint_is_a_site_average_invariant_to_supercells():
    primitive = cubic_perovskite()
    supercell = primitive * (2, 1, 1)
    fp = structure_fingerprint(primitive)
    assert fp.shape == (N_STRUCT_FEATURES,) and np.all(np.isfinite(fp))
    np.testing.assert_allclose(structure_fingerprint(supercell), fp, atol=1e-8)


def test_different_structure_types_have_distant_fingerprints():
    distance = np.linalg.norm(structure_fingerprint(rocksalt()) - structure_fingerprint(cubic_perovskite()))
    assert distance > 0.2  # farther apart than the perov_5 coverage cutoff


def test_composition_fingerprint_depends_on_fractions_only():
    nacl = composition_fingerprint(Composition("NaCl"))
    assert nacl.shape == (N_COMP_FEATURES,)
    np.testing.assert_allclose(composition_fingerprint(Composition("Na4Cl4")), nacl)


def test_comp_scaler_standardises_with_cdvae_constants_and_zeroes_nan():
    raw = COMP_SCALER_MEANS + 2 * COMP_SCALER_STDS
    raw[5] = np.nan
    scaled = scale_composition(raw[None])
    assert scaled.shape == (1, N_COMP_FEATURES)
    assert scaled[0, 5] == 0.0
    np.testing.assert_allclose(np.delete(scaled[0], 5), 2.0)
