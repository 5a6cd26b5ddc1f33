"""The discovery campaign: runs the stage flows in order under one parent flow run.

Each stage resumes on its own (finished outputs are reused), so re-running a campaign after a
crash or with more stages only does what is missing.
"""

from __future__ import annotations

from prefect import flow

from flows.params import CampaignParams
from flows.stages import fetch_flow, generate_flow, tensorize_flow, train_flow


@flow(name="discovery-campaign", log_prints=True)
def discovery_campaign(params: CampaignParams = CampaignParams()) -> dict:
    layout = params.run.layout()
    results = {"campaign": params.run.campaign, "run_dir": str(layout.campaign_dir)}
    results["fetch"] = fetch_flow(params.run, params.source)
    results["tensorize"] = tensorize_flow(params.run, params.tensorize)
    results["train"] = train_flow(params.run, params.train)
    results["generate"] = generate_flow(params.run, params.generate)
    return results
