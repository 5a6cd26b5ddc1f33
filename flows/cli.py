"""`unimat` command line: every subcommand runs its Prefect flow.

Parameters are validated (pydantic) before Prefect starts, so a typo fails in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError


def _ensure_prefect_home() -> None:
    """Keep Prefect's database and settings inside the project unless the user chose otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", default="demo", help="campaign name: results go to <results-root>/<campaign>/")
    parser.add_argument("--results-root", default=None, help="folder holding all campaigns (default: $UNIMAT_RESULTS_ROOT or ./runs)")


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="perov_5",
                        help="perov_5 | carbon_24 (bundled), mp (Materials Project, needs MP_API_KEY), or a CDVAE-format CSV path")
    parser.add_argument("--splits", default="", help="comma-separated splits to keep, e.g. val,test (default: all)")


def _tensorize_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-atoms-per-element", type=int, default=None, help="UniMat L (default: fitted to the data)")
    parser.add_argument("--shard-size", type=int, default=4096)


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops cleanly with a checkpoint")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-split", default=None, help="split to train on (default: train, else val)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")


def _generate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-samples", type=int, default=200, help="unconditional samples")
    parser.add_argument("--compositions", default="", help="comma-separated cell formulas, e.g. SrTiO3,Ba2Ti2O6 (conditional)")
    parser.add_argument("--samples-per-composition", type=int, default=4)
    parser.add_argument("--gen-batch-size", type=int, default=100)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (DDPM: 1000 for the exact sampler)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight")
    parser.add_argument("--seed", type=int, default=0)
    if not any(a.dest == "device" for a in parser._actions):
        parser.add_argument("--device", default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimat", description="UniMat materials discovery pipeline (Prefect flows).")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="load a dataset into <campaign>/fetch/structures.parquet")
    _run_args(fetch)
    _source_args(fetch)
    tensorize = sub.add_parser("tensorize", help="encode the fetched structures as UniMat tensors")
    _run_args(tensorize)
    _tensorize_args(tensorize)
    train = sub.add_parser("train", help="train (or resume) the UniMat model on the tensorized dataset")
    _run_args(train)
    _train_args(train)
    generate = sub.add_parser("generate", help="generate structures with the trained model")
    _run_args(generate)
    _generate_args(generate)
    campaign = sub.add_parser("campaign", help="run the discovery campaign (all stages, resuming finished ones)")
    _run_args(campaign)
    _source_args(campaign)
    _tensorize_args(campaign)
    _train_args(campaign)
    _generate_args(campaign)
    return parser


def _params(args: argparse.Namespace) -> dict:
    """Validated flow parameters for the chosen subcommand (pydantic raises on bad values)."""
    from flows.params import CampaignParams, GenerateParams, RunParams, TensorizeParams, TrainParams
    from unimat_core.datasets.source import DatasetSource

    has = vars(args)
    run = RunParams(campaign=args.campaign, **({"results_root": args.results_root} if args.results_root else {}))
    params: dict = {"run": run}
    if "source" in has:
        params["source"] = DatasetSource.parse(args.source, splits=tuple(s for s in args.splits.split(",") if s))
    if "shard_size" in has:
        params["tensorize"] = TensorizeParams(max_atoms_per_element=args.max_atoms_per_element, shard_size=args.shard_size)
    if "preset" in has:
        params["train"] = TrainParams(preset=args.preset, max_steps=args.max_steps, max_minutes=args.max_minutes,
                                      batch_size=args.batch_size, learning_rate=args.learning_rate, split=args.train_split,
                                      device=args.device)
    if "sampler" in has:
        params["generate"] = GenerateParams(
            num_samples=args.num_samples, compositions=tuple(c for c in args.compositions.split(",") if c),
            samples_per_composition=args.samples_per_composition, batch_size=args.gen_batch_size, sampler=args.sampler,
            steps=args.steps, guidance=args.guidance, seed=args.seed, device=args.device)
    if args.command == "campaign":
        return {"params": CampaignParams(**params)}
    return params


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = _params(args)
    except (ValidationError, ValueError) as exc:
        print(f"unimat {args.command}: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    _ensure_prefect_home()
    from flows.campaign import discovery_campaign
    from flows.stages import fetch_flow, generate_flow, tensorize_flow, train_flow

    flow = {"fetch": fetch_flow, "tensorize": tensorize_flow, "train": train_flow, "generate": generate_flow,
            "campaign": discovery_campaign}[args.command]
    try:
        result = flow(**params)
    except FileNotFoundError as exc:
        print(f"unimat {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    run = params["params"].run if "params" in params else params["run"]
    print(f"\nResults: {run.layout().campaign_dir}")
    print("Inspect runs in the Prefect UI: `make ui` (starts `prefect server` on http://127.0.0.1:4200) and run with "
          "PREFECT_API_URL=http://127.0.0.1:4200/api to send runs there.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
