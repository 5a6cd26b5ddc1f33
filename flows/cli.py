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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimat", description="UniMat materials discovery pipeline (Prefect flows).")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="load a dataset into <campaign>/fetch/structures.parquet")
    _run_args(fetch)
    _source_args(fetch)
    tensorize = sub.add_parser("tensorize", help="encode the fetched structures as UniMat tensors")
    _run_args(tensorize)
    _tensorize_args(tensorize)
    campaign = sub.add_parser("campaign", help="run the discovery campaign (all stages, resuming finished ones)")
    _run_args(campaign)
    _source_args(campaign)
    _tensorize_args(campaign)
    return parser


def _params(args: argparse.Namespace):
    from flows.params import CampaignParams, RunParams, TensorizeParams
    from unimat_core.datasets.source import DatasetSource

    run = RunParams(campaign=args.campaign, **({"results_root": args.results_root} if args.results_root else {}))
    source = DatasetSource.parse(args.source, splits=tuple(s for s in args.splits.split(",") if s)) if hasattr(args, "source") else None
    tensorize = TensorizeParams(max_atoms_per_element=args.max_atoms_per_element, shard_size=args.shard_size) if hasattr(args, "shard_size") else None
    if args.command == "campaign":
        return {"params": CampaignParams(run=run, source=source, tensorize=tensorize)}
    return {k: v for k, v in {"run": run, "source": source, "tensorize": tensorize}.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = _params(args)
    except (ValidationError, ValueError) as exc:
        print(f"unimat {args.command}: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    _ensure_prefect_home()
    from flows.campaign import discovery_campaign
    from flows.stages import fetch_flow, tensorize_flow

    flow = {"fetch": fetch_flow, "tensorize": tensorize_flow, "campaign": discovery_campaign}[args.command]
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
