"""Discovery benchmark tasks: thin Prefect wrappers around `dft.discovery_benchmark` (folder layout, budget and
timing rules are documented there). Each takes and returns paths, id lists and small summaries."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from dft.calculators import CalculatorConfig
from dft.discovery_benchmark.random_search import RandomStructureConfig
from dft.relax import RelaxConfig
from dft.discovery_benchmark import (
    plan_relaxation,
    prepare_targets,
    random_search_candidates,
    relax_chunk_rows,
    report_files,
    score,
    unimat_candidates,
)
from tasks.artifacts import artifact_key, file_links, inline_image, table_records
from unimat_core.model.config import GenerateConfig


@task(name="discovery-targets")
def prepare_targets_task(folder: str, settings: dict, known: str, compositions: list[str], n_compositions: int,
                         seed: int, unseen_only: bool, reference: str = "known") -> dict:
    summary = prepare_targets(Path(folder), settings, known, compositions, n_compositions, seed, unseen_only,
                              reference)
    get_run_logger().info("%d targets, %d known structures (%s)", len(summary["compositions"]), summary["n_known"],
                          "reused" if summary["reused"] else "new")
    return summary


@task(name="discovery-unimat-candidates", retries=1)
def unimat_candidates_task(checkpoint: str, compositions: list[str], k: int, generation: GenerateConfig, folder: str,
                           oversample: int = 1) -> dict:
    summary = unimat_candidates(checkpoint, compositions, k, generation, Path(folder), oversample)
    get_run_logger().info("unimat: %d candidates, %d decoded, %.1f s sampling", summary["n"], summary["n_valid"],
                          summary["seconds"])
    return summary


@task(name="discovery-random-candidates")
def random_candidates_task(compositions: list[str], k: int, seed: int, config: RandomStructureConfig,
                           folder: str) -> dict:
    summary = random_search_candidates(compositions, k, seed, config, Path(folder))
    get_run_logger().info("random: %d candidates, %d built", summary["n"], summary["n_valid"])
    return summary


@task(name="discovery-plan-relax")
def plan_relaxation_task(folder: str, chunk_size: int, sets: tuple[str, ...]) -> list[dict]:
    chunks = plan_relaxation(Path(folder), chunk_size, sets)
    get_run_logger().info("relax plan: %d chunks, %d structures", len(chunks), sum(len(c["ids"]) for c in chunks))
    return chunks


@task(name="discovery-relax-chunk", retries=1)
def relax_chunk_task(chunk: dict, calculator: CalculatorConfig, relax: RelaxConfig) -> dict:
    """One chunk: small arguments only (paths, ids, config dicts), so it ships to any worker."""
    summary = relax_chunk_rows(chunk["source"], chunk["ids"], chunk["out_dir"], calculator, relax)
    get_run_logger().info("%s %s: %d relaxed, %d converged", chunk["set"], Path(chunk["out_dir"]).name,
                          summary["n"], summary["n_converged"])
    return {"set": chunk["set"], "n_relaxed": 0 if summary["skipped"] else summary["n"],
            **{k: summary[k] for k in ("n_converged", "n_failed")}}


@task(name="discovery-report")
def report_task(folder: str, campaign: str, budget: int, tolerance: float, converged_only: bool,
                reference: str = "known") -> dict:
    """Score, write report.md / convergence.png / tables, publish markdown and table artifacts."""
    scored = score(Path(folder), budget, tolerance, converged_only, reference)
    files = report_files(Path(folder))
    png = files["convergence.png"]
    create_markdown_artifact(
        key=artifact_key(campaign, "discovery-report"),
        markdown=(scored["markdown"] + f"\n## Convergence plot\n\n[convergence.png]({png.resolve().as_uri()}) "
                  f"(`{png.resolve()}`)\n\n" + inline_image(png, "convergence") + "## Files\n\n" + file_links(files)),
        description="discovery benchmark: UniMat vs random structure search")
    create_table_artifact(key=artifact_key(campaign, "discovery-per-composition"),
                          table=table_records(scored["per_composition"]),
                          description="per composition and method: relaxations to reach the known energy, match rate")
    summary = scored["summary"]
    return {"folder": folder, "report": str(files["report.md"]), "plot": str(png),
            "table": str(files["per_composition.parquet"]), "n_scored": len(scored["reference"]),
            "unscored": scored["unscored"], "summary": table_records(summary),
            "head_to_head": summary.attrs.get("head_to_head"), "paper": scored["paper"]}
