"""Give a shipped checkpoint's composition prior the atoms-per-cell histogram of its training data.

    python tools/add_atom_counts.py perov_5 carbon_24

Checkpoints trained before the prior kept that histogram (unimat_core/model/composition_prior.py) sample the
number of atoms from the GRU alone. The histogram is a count of the training split's cells by number of sites
(the bundled val split, which the shipped models were trained on); the prior's own record of how many
compositions it was fitted on must agree, or nothing is written. Weights, optimizer and step are kept, so
training still resumes from the file.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from unimat_core.atomic import atomic_path
from unimat_core.datasets import load_bundled
from unimat_core.model.pretrained import checkpoint_file


def add_atom_counts(name: str) -> list[int]:
    path = checkpoint_file(f"pretrained:{name}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    prior = state["composition_prior"]
    split = state["train_config"]["split"]
    tables = load_bundled(name).structures
    counts = np.bincount(tables.loc[tables["split"] == split, "n_sites"].to_numpy()).tolist()
    fitted = prior["stats"]["prior_train"] + prior["stats"]["prior_val"]
    if sum(counts) != fitted:
        raise SystemExit(f"{name}: the {split} split has {sum(counts)} crystals, the prior was fitted on {fitted}")
    prior["atom_counts"] = counts
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return counts


if __name__ == "__main__":
    for model in sys.argv[1:]:
        histogram = add_atom_counts(model)
        print(model, {n: c for n, c in enumerate(histogram) if c})
