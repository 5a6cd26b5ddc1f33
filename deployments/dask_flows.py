"""Stage flows with their tasks on a Dask cluster: the deployable entry points of the cluster path.

Nothing here re-implements a stage: each flow runs the ordinary stage flow as a subflow with a
`DaskTaskRunner` built from a typed cluster config (deployments/cluster.py), so the chunk tasks go
to Dask workers (LocalCluster processes, or SLURM/PBS jobs) instead of the local thread pool, and
the results are the same rows in the same run folder.
"""

from __future__ import annotations

from prefect import flow

from deployments.cluster import ClusterConfig, LocalDaskConfig, dask_task_runner
from flows.campaign import discovery_campaign
from flows.params import CampaignParams, GenerateParams, RelaxParams, RunParams
from flows.stages import generate_flow, relax_flow
from unimat_core.run_layout import STAGES


@flow(name="relax-on-dask", log_prints=True)
def relax_on_dask(run: RunParams = RunParams(), relax: RelaxParams = RelaxParams(),
                  cluster: ClusterConfig = LocalDaskConfig()) -> dict:
    return relax_flow.with_options(task_runner=dask_task_runner(cluster))(run, relax)


@flow(name="generate-on-dask", log_prints=True)
def generate_on_dask(run: RunParams = RunParams(), generate: GenerateParams = GenerateParams(),
                     cluster: ClusterConfig = LocalDaskConfig()) -> dict:
    return generate_flow.with_options(task_runner=dask_task_runner(cluster))(run, generate)


@flow(name="campaign-on-dask", log_prints=True)
def campaign_on_dask(params: CampaignParams = CampaignParams(), cluster: ClusterConfig = LocalDaskConfig()) -> dict:
    """The discovery campaign with its relax stage's chunk tasks on the cluster: the campaign up to generate, the
    relax stage with the campaign's own relax settings on Dask, then the whole campaign again, which reuses
    fetch..relax and runs score and evaluate. One set of parameters, so the relax settings cannot differ from
    the campaign's (which would make the last call refuse the relax output)."""
    if STAGES.index(params.stop_after) < STAGES.index("relax"):
        return discovery_campaign(params)
    discovery_campaign(params.model_copy(update={"stop_after": "generate"}))
    relax_flow.with_options(task_runner=dask_task_runner(cluster))(params.run, params.relax)
    return discovery_campaign(params)
