"""Coverage recall and precision (COV-R, COV-P), as CDVAE's `compute_cov` defines them.

For each reference crystal, the nearest generated crystal in structure-fingerprint space and
(independently) the nearest in scaled composition space; recall is the fraction of reference
crystals with both distances within the cutoffs. Precision swaps the roles and divides by
the number of generated crystals *before* dropping those without fingerprints, so failures
count against it. Distances are computed in blocks to keep memory flat.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _nearest(gen: np.ndarray, ref: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(min distance of each gen row to ref, min distance of each ref row to gen)."""
    gen_min = np.empty(len(gen))
    ref_min = np.full(len(ref), np.inf)
    for start in range(0, len(gen), block):
        distances = cdist(gen[start : start + block], ref)
        gen_min[start : start + block] = distances.min(axis=1)
        np.minimum(ref_min, distances.min(axis=0), out=ref_min)
    return gen_min, ref_min


def coverage(gen_struct: np.ndarray, gen_comp: np.ndarray, ref_struct: np.ndarray, ref_comp: np.ndarray,
             struct_cutoff: float, comp_cutoff: float, n_generated: int | None = None,
             block: int = 2048) -> dict[str, float]:
    """COV-R, COV-P and the mean nearest distances (AMSD/AMCD) of fingerprint arrays.

    `gen_*`/`ref_*` hold only rows with fingerprints (comp already CompScaler-scaled);
    `n_generated` is the generated count before filtering (default: len(gen_struct)).
    """
    n_generated = len(gen_struct) if n_generated is None else n_generated
    if len(ref_struct) == 0:
        raise ValueError("coverage needs at least one reference fingerprint")
    if len(gen_struct) == 0:
        nan = float("nan")
        return {"cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": nan, "amsd_precision": nan,
                "amcd_recall": nan, "amcd_precision": nan}
    struct_precision, struct_recall = _nearest(gen_struct, ref_struct, block)
    comp_precision, comp_recall = _nearest(gen_comp, ref_comp, block)
    recall = (struct_recall <= struct_cutoff) & (comp_recall <= comp_cutoff)
    precision = (struct_precision <= struct_cutoff) & (comp_precision <= comp_cutoff)
    return {
        "cov_recall": float(recall.mean()),
        "cov_precision": float(precision.sum() / max(n_generated, 1)),
        "amsd_recall": float(struct_recall.mean()),
        "amsd_precision": float(struct_precision.mean()),
        "amcd_recall": float(comp_recall.mean()),
        "amcd_precision": float(comp_precision.mean()),
    }
