"""The discovery campaign: chains the stage tasks under one parent flow run."""

from __future__ import annotations

from prefect import flow

from flows.params import CampaignParams
from tasks.fetch import fetch_structures
from tasks.tensorize import tensorize_structures


@flow(name="discovery-campaign", log_prints=True)
def discovery_campaign(params: CampaignParams = CampaignParams()) -> dict:
    layout = params.run.layout()
    fetched = fetch_structures(params.source, layout)
    tensors = tensorize_structures(layout, params.tensorize.max_atoms_per_element, params.tensorize.shard_size)
    return {"campaign": params.run.campaign, "run_dir": str(layout.campaign_dir), "fetch": fetched, "tensorize": tensors}
