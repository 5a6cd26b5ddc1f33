"""Relax stage tasks: plan the chunks, relax one chunk, report. The engine is dft.batch (plan_chunks,
relax_ids, one cached calculator per process); the flow maps `relax_chunk` over the plan on whatever task
runner it has (threads locally, a Dask cluster remotely). Tasks take paths, ids and config objects only."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from dft.batch import plan_chunks, read_relaxed, relax_ids, relaxed_summary
from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from tasks.artifacts import artifact_key, file_links, histogram_png, inline_image
from unimat_core.run_layout import RunLayout


@task(name="plan-relax")
def plan_relax(source: str, out_dir: str, chunk_size: int, ids: list[str] | None = None) -> dict:
    """Which ids each chunk relaxes (small lists of strings) and the part each chunk writes."""
    plan = plan_chunks(source, out_dir, chunk_size, ids)
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the stage ran, even with nothing to relax
    get_run_logger().info("relax plan: %d candidates, %d already relaxed, %d chunks of <= %d", plan["n_candidates"],
                          plan["n_done_before"], len(plan["chunks"]), chunk_size)
    return plan


@task(name="relax-chunk", retries=1)
def relax_chunk(source: str, ids: list[str], part: str, calculator: CalculatorConfig, relax: RelaxConfig,
                max_sites: int | None = None) -> dict:
    """One chunk: small arguments only (paths, ids, config dicts), so it ships to any worker."""
    summary = relax_ids(source, ids, part, calculator, relax, max_sites)
    get_run_logger().info("%s: %d structures, %s", Path(part).name, summary["n"],
                          "already written" if summary["skipped"] else f"{summary['n_converged']} converged")
    return summary


@task(name="relax-report")
def relax_report(layout: RunLayout, n_done_before: int, chunks: list[dict]) -> dict:
    """Summary of the relax folder + a markdown artifact (counts, failure reasons, step histogram, files)."""
    summary = {**relaxed_summary(layout.relaxed), "n_done_before": n_done_before,
               "n_relaxed_now": sum(c["n"] for c in chunks if not c["skipped"])}
    steps = read_relaxed(layout.relaxed)["steps"] if summary["n_relaxed"] else []
    png = histogram_png(steps, layout.relax_steps_plot, title="optimizer steps per structure",
                        xlabel="steps")
    reasons = "".join(f"* {k}: {v}\n" for k, v in summary["failure_reasons"].items()) or "* none\n"
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "relax"),
        markdown=(f"### Relaxation of {layout.campaign}\n\n* relaxed: {summary['n_relaxed']} "
                  f"({summary['n_relaxed_now']} in this run, {n_done_before} resumed), converged: "
                  f"{summary['n_converged']}, not converged: {summary['n_failed']}\n"
                  f"* calculator: {', '.join(summary['calculators'])}; median steps {summary['median_steps']:g}, "
                  f"total relaxation time {summary['total_wall_s']:g} s\n\n#### Failure reasons\n\n{reasons}\n"
                  + inline_image(png, "steps histogram") + "#### Files\n\n"
                  + file_links({p.name: p for p in sorted(layout.relaxed.glob("part-*.parquet"))})),
        description="relax stage summary")
    return summary
