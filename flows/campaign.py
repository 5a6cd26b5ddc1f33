"""The discovery campaign: runs the stage flows in order under one parent flow run.

Each stage resumes on its own (finished outputs and chunks are reused), so re-running a campaign
after a crash or with more stages only does what is missing. The S.U.N. summary is refreshed after
the evaluate stage, whose uniqueness and novelty it needs.

With `params.rounds.round` set ("next" or a number) the campaign runs one round instead (flows/rounds.py):
new seeds and targets, the round's stages in `<campaign>/round-NNNN/`, its finds added to
`<campaign>/discoveries.parquet`. Without it, the single run of before.
"""

from __future__ import annotations

import time

from prefect import flow

from flows.params import CampaignParams
from flows.preflight import check_compositions, tensor_spec
from flows.stages import evaluate_flow, fetch_flow, generate_flow, relax_flow, score_flow, tensorize_flow, train_flow
from tasks.campaign_summary import publish_campaign_summary
from tasks.score import summarize_sun
from unimat_core.run_layout import STAGES


@flow(name="discovery-campaign", log_prints=True)
def discovery_campaign(params: CampaignParams = CampaignParams()) -> dict:
    if params.rounds.round is not None:
        from flows.rounds import campaign_round

        return campaign_round(params)
    run = params.run
    layout = run.layout()
    steps = {
        "fetch": lambda: fetch_flow(run, params.source),
        "tensorize": lambda: tensorize_flow(run, params.tensorize),
        "train": lambda: train_flow(run, params.train),
        "generate": lambda: generate_flow(run, params.generate),
        "relax": lambda: relax_flow(run, params.relax),
        "score": lambda: score_flow(run, params.relax, params.score),
        "evaluate": lambda: evaluate_flow(run, params.evaluate),
    }
    results: dict = {"campaign": run.campaign, "run_dir": str(layout.campaign_dir), "seconds": {}}
    planned = STAGES[: STAGES.index(params.stop_after) + 1]
    for stage in planned:
        if stage == "train" and "generate" in planned:  # L is known now: a composition that cannot fit stops
            check_compositions(params.generate.compositions, tensor_spec(layout), "tensorized data")  # before training
        start = time.perf_counter()
        results[stage] = steps[stage]()
        results["seconds"][stage] = round(time.perf_counter() - start, 1)
    if "evaluate" in results and "sun" in (results.get("score") or {}):
        results["sun"] = summarize_sun(layout, params.score.use_metastable)
    publish_campaign_summary(layout, results)
    return results
