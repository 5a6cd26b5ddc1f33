"""What a round fine-tunes on, for real (the shipped perov_5 model, its training loop, perov_5 crystals): a find whose
relaxation left the family of cells the model was trained on enters as the sample it came from, so the fine-tune
starts near the model's own loss and leaves the model's knowledge of its training crystals intact.

Before this, the relaxed crystals were taken as they were: in the demo campaign (perov_5, CHGNet) the
fine-tune's loss was ~37 at step 12 against the model's ~0.1, and the campaign got worse every round."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from dft.discoveries import COLUMNS, finetune_frame
from tests.flows.helpers import write_generated
from unimat_core.datasets.bundled import bundled_csv_paths
from unimat_core.model.checkpoint import load_checkpoint
from unimat_core.model.familiarity import crystal_losses
from unimat_core.model.training import TrainConfig, train
from unimat_core.representation import UniMatSpec
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import records_to_frame, structure_from_json, structure_to_json, write_structures
from unimat_core.tensor_store import tensorize_frame

PARENT = "pretrained:perov_5"  # trained on the bundled perov_5 val split, whose cells are all cubic


def _perov(split: str, n: int) -> list[Structure]:
    with gzip.open(bundled_csv_paths("perov_5")[split], "rt") as fh:
        return [Structure.from_str(cif, fmt="cif") for cif in pd.read_csv(fh, nrows=n)["cif"]]


def _tilted(structure: Structure) -> Structure:
    """The same atoms in a stretched, monoclinic cell: what CHGNet did to cubic perovskite samples of the demo
    (NbCoO3 sampled at a = 3.69 A relaxed to 5.59 / 3.14 / 3.94 A, beta 110 degrees)."""
    a, b, c = structure.lattice.abc
    return Structure(Lattice.from_parameters(1.5 * a, 0.85 * b, c, 90, 110, 90), structure.species,
                     structure.frac_coords)


def _finds(layout: RunLayout, samples: list[Structure]) -> pd.DataFrame:
    """Round 1 of a campaign: four samples (cubic perovskites like the model's crystals), three of which relaxed
    into tilted cells and one that stayed cubic (a 1 % larger cell); all four within the fine-tune's cutoff."""
    ids = write_generated(layout, samples, n_invalid=0)
    stayed = samples[3].copy()
    stayed.scale_lattice(stayed.volume * 1.03)
    relaxed = [_tilted(s) for s in samples[:3]] + [stayed]
    rows = [{"id": f"r0001-{i}", "round": 1, "candidate_id": i, "formula": s.formula,
             "reduced_formula": s.composition.reduced_formula, "target_formula": None, "kind": "user",
             "energy_per_atom": -1.0, "formation_energy_per_atom": -1.0, "e_above_hull": 0.0,
             "decomposition_energy": -0.01, "stable": True, "metastable": True, "structure": structure_to_json(s)}
            for i, s in zip(ids, relaxed)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_parquet(layout.discoveries, index=False)
    return table


def _loss(checkpoint: str, texts) -> float:
    return float(np.mean(crystal_losses(checkpoint, [structure_from_json(t) for t in texts])))


@pytest.mark.slow
def test_a_rounds_finetune_starts_from_what_the_model_knows_and_keeps_it(tmp_path):
    base = RunLayout(tmp_path, "perov")
    own_crystals = _perov("val", 48)
    write_structures(records_to_frame(own_crystals, [f"v{i}" for i in range(48)], split="val", source="perov_5"),
                     base.structures)
    samples = _perov("test", 4)
    table = _finds(base.for_round(1), samples)
    layout = base.for_round(2)
    split, parent = "val", PARENT
    known = pd.read_parquet(layout.structures)
    own = _loss(parent, known["structure"])
    assert own < 0.3 and _loss(parent, table["structure"].iloc[:3]) > 20 * own  # tilted: far outside what it knows

    frame, counts = finetune_frame(layout, 0.1, split, 2, parent, 4.0)
    assert counts["n_finds"] == 4 and counts["n_as_sample"] == 3 and counts["n_as_relaxed"] == 1
    assert counts["reference_loss"] < 2 * own and counts["n_left_out"] == 0
    generated = pd.read_parquet(layout.for_round(1).generated).set_index("id")["structure"]
    by_id = frame.set_index("id")["structure"]
    for row in table.itertuples():  # each find as its sample, or as relaxed when that stayed in shape
        assert by_id[row.id] == (generated[row.candidate_id] if row.Index < 3 else row.structure)
    assert (frame["source"] == "discoveries").sum() == 4 and len(frame) == 8  # + as many replayed crystals
    assert _loss(parent, frame["structure"]) < 3 * own

    # the round's fine-tune on it (its settings: flows.rounds): the first step's loss is within a small factor
    # of the model's loss on its own crystals, and afterwards that loss has not grown
    tensorize_frame(frame, layout.finetune_tensors, spec=UniMatSpec.from_dict(load_checkpoint(parent)["spec"]))
    out = layout.stage_dir("finetune")
    config = TrainConfig(dataset=str(layout.finetune_tensors), out_dir=str(out), init_from=parent, max_steps=40,
                         learning_rate=1e-4, warmup_steps=4, ema_decay=0.925, split="train", batch_size=8,
                         composition_prior=False, checkpoint_every=40, log_every=1, device="cpu", cpu_threads=1)
    summary = train(config)
    with (out / "metrics.csv").open() as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(losses) == 40 and losses[0] < 4 * own and np.mean(losses[-10:]) < 4 * own
    kept = known["structure"]
    assert _loss(summary.checkpoint, kept) < 1.5 * own
    ema = float(np.mean(crystal_losses(summary.checkpoint, [structure_from_json(t) for t in kept], weights="ema")))
    assert ema < 1.5 * own

    # the next round's fine-tune continues the EMA at full decay (it counts the steps behind its init's init)
    first, state = load_checkpoint(parent), load_checkpoint(summary.checkpoint)
    assert state["ema_offset"] == first["step"] + first.get("ema_offset", 0)
    again = train(TrainConfig.from_dict({**config.as_dict(), "init_from": summary.checkpoint,
                                         "out_dir": str(layout.for_round(3).stage_dir("finetune")), "max_steps": 2}))
    assert load_checkpoint(again.checkpoint)["ema_offset"] == state["step"] + state["ema_offset"]
