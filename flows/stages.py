"""One Prefect flow per stage; each runs alone on an existing run folder."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.params import GenerateParams, RunParams, TensorizeParams, TrainParams
from tasks.fetch import fetch_structures
from tasks.generate import generate_batch, plan_generation
from tasks.tensorize import tensorize_structures
from tasks.train import train_model
from unimat_core.datasets.source import DatasetSource


@flow(name="fetch", log_prints=True)
def fetch_flow(run: RunParams = RunParams(), source: DatasetSource = DatasetSource()) -> dict:
    return fetch_structures(source, run.layout())


@flow(name="tensorize", log_prints=True)
def tensorize_flow(run: RunParams = RunParams(), tensorize: TensorizeParams = TensorizeParams()) -> dict:
    return tensorize_structures(run.layout(), tensorize.max_atoms_per_element, tensorize.shard_size)


@flow(name="train", log_prints=True)
def train_flow(run: RunParams = RunParams(), train: TrainParams = TrainParams()) -> dict:
    return train_model(run.layout(), train.core_config())


@flow(name="generate", log_prints=True)
def generate_flow(run: RunParams = RunParams(), generate: GenerateParams = GenerateParams()) -> dict:
    """Fan out one task per batch on the flow's task runner; parts land as batches finish."""
    layout = run.layout()
    checkpoint = layout.require(layout.stage_dir("train") / "checkpoints" / "last.pt", made_by="train")
    config = generate.core_config(str(checkpoint), str(layout.stage_dir("generate")))
    batches = plan_generation(config)
    futures = generate_batch.map(unmapped(config), list(range(len(batches))), batches)
    parts = [f.result() for f in futures]
    return {"out_dir": config["out_dir"], "n_parts": len(parts), "n_generated": sum(p["n"] for p in parts),
            "n_valid": sum(p["n_valid"] for p in parts), "n_reused_parts": sum(p["skipped"] for p in parts)}
