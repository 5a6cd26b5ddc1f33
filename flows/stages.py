"""One Prefect flow per stage; each runs alone on an existing run folder."""

from __future__ import annotations

from prefect import flow

from flows.params import RunParams, TensorizeParams
from tasks.fetch import fetch_structures
from tasks.tensorize import tensorize_structures
from unimat_core.datasets.source import DatasetSource


@flow(name="fetch", log_prints=True)
def fetch_flow(run: RunParams = RunParams(), source: DatasetSource = DatasetSource()) -> dict:
    return fetch_structures(source, run.layout())


@flow(name="tensorize", log_prints=True)
def tensorize_flow(run: RunParams = RunParams(), tensorize: TensorizeParams = TensorizeParams()) -> dict:
    return tensorize_structures(run.layout(), tensorize.max_atoms_per_element, tensorize.shard_size)
