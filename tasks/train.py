"""Train stage: a long task that trains (or resumes) the UniMat model on the tensorized dataset."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from tasks.artifacts import artifact_key, file_links, inline_image, loss_curve_png

from unimat_core.model.config import TrainConfig
from unimat_core.model.training import train
from unimat_core.run_layout import RunLayout
from unimat_core.tensor_store import training_split


@task(name="train-model")
def train_model(layout: RunLayout, config: TrainConfig, dataset: str | None = None, out_dir: str | None = None) -> dict:
    """Train on the campaign's tensors into its train folder (the split: the given one, else train, else val), or on
    `dataset` into `out_dir` (a round's fine-tune on its finds, which publishes no loss curve); returns the
    TrainSummary as a dict."""
    logger = get_run_logger()
    dataset = dataset or str(layout.require(layout.tensors, made_by="tensorize"))
    train_config = config.model_copy(update={"dataset": dataset, "out_dir": out_dir or str(layout.stage_dir("train")),
                                             "split": training_split(dataset, config.split)})
    progress = create_progress_artifact(progress=0.0, description=f"training steps of {layout.campaign}")

    def on_log(row: dict) -> None:
        logger.info("step %d loss %.4f (%.0f samples/s)", row["step"], row["loss"], row["samples_per_s"])
        update_progress_artifact(progress, progress=min(100.0, 100.0 * row["step"] / train_config.max_steps))

    summary = train(train_config, on_log=on_log)
    update_progress_artifact(progress, progress=100.0)
    logger.info("train: %s", summary.as_dict())
    if out_dir is None:
        publish_loss_curve(layout, summary.as_dict())
    return summary.as_dict()


def publish_loss_curve(layout: RunLayout, summary: dict) -> None:
    """The loss curve as `train/loss.png` and a markdown artifact with it inline."""
    png = loss_curve_png(layout.train_metrics, layout.loss_plot)
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "train"),
        markdown=(f"### Training of {layout.campaign}\n\n* steps: {summary['step']} (resumed from "
                  f"{summary['resumed_from']}, stopped by {summary['stopped_by']})\n* last loss: "
                  f"{summary['last_loss']:.4f}, best logged loss: {summary['best_loss']:.4f}\n\n"
                  + inline_image(png, "training loss") + file_links({"checkpoint": layout.train_checkpoint,
                                                                     "metrics": layout.train_metrics,
                                                                     "loss curve": png or ""})),
        description="train stage summary")
