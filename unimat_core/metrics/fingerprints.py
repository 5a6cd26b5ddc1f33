"""Structure and composition fingerprints of the CDVAE coverage metric (matminer).

Structure: CrystalNN site fingerprints (preset "ops") averaged over sites. Composition: Magpie
ElementProperty features, without imputation (missing element data stays NaN and becomes 0
after CDVAE's scaler). Featurizers are built once per process: building them is slow.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure

from unimat_core.metrics.cdvae_constants import COMP_SCALER_MEANS, COMP_SCALER_STDS

N_STRUCT_FEATURES = 61  # CrystalNNFingerprint "ops"
N_COMP_FEATURES = 132  # Magpie ElementProperty


class FingerprintError(RuntimeError):
    """A fingerprint that could not be computed (CrystalNN failure or NaN features)."""


@lru_cache(maxsize=1)
def _site_featurizer():
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops")


@lru_cache(maxsize=1)
def _composition_featurizer():
    from matminer.featurizers.composition.composite import ElementProperty

    try:
        return ElementProperty.from_preset("magpie", impute_nan=False)
    except TypeError:  # matminer without the impute_nan option never imputes
        return ElementProperty.from_preset("magpie")


def structure_fingerprint(structure: Structure) -> np.ndarray:
    """Mean CrystalNN "ops" site fingerprint [61]; raises FingerprintError on failure or NaN."""
    featurizer = _site_featurizer()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sites = [featurizer.featurize(structure, i) for i in range(len(structure))]
    except Exception as exc:  # CrystalNN raises many kinds of errors on odd geometries
        raise FingerprintError(f"CrystalNN failed: {type(exc).__name__}: {exc}"[:300]) from exc
    fingerprint = np.asarray(sites, dtype=float).mean(axis=0)
    if fingerprint.shape != (N_STRUCT_FEATURES,) or not np.all(np.isfinite(fingerprint)):
        raise FingerprintError("CrystalNN fingerprint has NaN/inf entries")
    return fingerprint


def composition_fingerprint(composition: Composition) -> np.ndarray:
    """Raw Magpie features [132] (may contain NaN for elements lacking data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(_composition_featurizer().featurize(composition.element_composition), dtype=float)


def scale_composition(fingerprints: np.ndarray) -> np.ndarray:
    """CDVAE's CompScaler: standardise with the published constants, then NaN -> 0."""
    scaled = (np.asarray(fingerprints, dtype=float) - COMP_SCALER_MEANS) / COMP_SCALER_STDS
    return np.where(np.isnan(scaled), 0.0, scaled)
