"""`unimat` command line: every subcommand runs its Prefect flow.

Options left out keep the pydantic defaults of the flow's parameters (for `campaign`, the demo
defaults of `CampaignParams`). Parameters, input files and existing stage outputs are checked before
Prefect starts (flows.preflight), so a mistake fails in well under a second and nothing is written.

Exit codes: 0 done; 2 a mistake in the options, files or rows given (one message naming it); 1 the run
could not finish (e.g. a stage run before the one that makes its input), or a bug (with its traceback).
`--debug` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from unimat_core.errors import UserInputError
from unimat_core.model.config import SAMPLERS
from unimat_core.run_layout import MissingStageOutput

S = argparse.SUPPRESS  # absent options are absent from the namespace: the pydantic default applies

# option dest -> (parameter group, field)
FIELDS: dict[str, tuple[str, str]] = {
    "max_atoms_per_element": ("tensorize", "max_atoms_per_element"), "shard_size": ("tensorize", "shard_size"),
    "crop_grid": ("tensorize", "crop_grid"), "tensorize_max_sites": ("tensorize", "max_sites"),
    "preset": ("train", "preset"), "max_steps": ("train", "max_steps"), "max_minutes": ("train", "max_minutes"),
    "batch_size": ("train", "batch_size"), "learning_rate": ("train", "learning_rate"),
    "train_split": ("train", "split"), "train_device": ("train", "device"),
    "prediction": ("train", "prediction"), "slot_loss": ("train", "slot_loss"),
    "init_from": ("train", "init_from"), "periodic_loss": ("train", "periodic_loss"),
    "threads": ("train", "cpu_threads"), "lr_decay_steps": ("train", "lr_decay_steps"), "keep_every": ("train", "keep_every"),
    "model": ("generate", "model"), "unconditional": ("generate", "unconditional"),
    "num_samples": ("generate", "num_samples"), "compositions": ("generate", "compositions"),
    "samples_per_composition": ("generate", "samples_per_composition"), "gen_batch_size": ("generate", "batch_size"),
    "sampler": ("generate", "sampler"), "steps": ("generate", "steps"), "guidance": ("generate", "guidance"),
    "seed": ("generate", "seed"), "gen_device": ("generate", "device"),
    "calculator": ("relax", "calculator"), "calculator_model": ("relax", "model"), "fmax": ("relax", "fmax"),
    "relax_steps": ("relax", "max_steps"), "optimizer": ("relax", "optimizer"), "time_limit": ("relax", "time_limit_s"),
    "chunk_size": ("relax", "chunk_size"), "max_sites": ("relax", "max_sites"), "relax_device": ("relax", "device"),
    "reference": ("score", "reference"), "reference_size": ("score", "reference_size"),
    "metastable_cutoff": ("score", "metastable_cutoff"), "use_metastable": ("score", "use_metastable"),
    "eval_dataset": ("evaluate", "dataset"), "struct_cutoff": ("evaluate", "struct_cutoff"),
    "comp_cutoff": ("evaluate", "comp_cutoff"), "n_eval": ("evaluate", "n_eval"),
    "eval_workers": ("evaluate", "n_workers"), "cache_dir": ("evaluate", "cache_dir"),
    "coverage_on": ("evaluate", "coverage_on"), "reference_limit": ("evaluate", "reference_limit"),
    "matching": ("evaluate", "matching"), "eval_task": ("evaluate", "task"), "csp_k": ("evaluate", "k"),
    "csp_targets": ("evaluate", "csp_targets"),
}
LISTS = {"compositions"}  # comma-separated on the command line
OPTION_OF_DEST = {"train_device": "--device", "gen_device": "--device", "matching": "--no-matching"}  # else --dest-name


def _ensure_prefect_home() -> None:
    """Keep Prefect's database and settings inside the project unless the user chose otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    # the temporary server's first start (database migrations) can exceed Prefect's 20 s on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # offline by design: the server's usage heartbeat cannot reach its host and would log an ERROR per run
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", default="demo", help="campaign name: results go to <results-root>/<campaign>/")
    parser.add_argument("--results-root", default=None, help="folder holding all campaigns (default: $UNIMAT_RESULTS_ROOT or ./runs)")
    parser.add_argument("--overwrite", nargs="?", const="", default=None, metavar="STAGES",
                        help="redo these stages (comma-separated; bare: this command's stage) although output made with "
                             "other settings exists; it moves to <campaign>/superseded/ with the stages made from it")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of every error")


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="perov_5",
                        help="perov_5 | carbon_24 (bundled), mp (Materials Project, needs MP_API_KEY), or a CDVAE-format CSV path")
    parser.add_argument("--splits", default="", help="comma-separated splits to keep, e.g. val,test (default: all)")


def _tensorize_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-atoms-per-element", type=int, default=S, help="UniMat L (default: fitted to the data)")
    parser.add_argument("--shard-size", type=int, default=S, help="structures per tensor shard (4096)")
    parser.add_argument("--crop-grid", action="store_true", default=S,
                        help="grid of only the data's rows/columns of the periodic table (faster; no other elements)")
    parser.add_argument("--tensorize-max-sites", type=int, default=S,
                        help="cells with more sites are left out with their reason, so one outlier cannot widen the "
                             "tensor of every crystal (64)")


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=S, choices=["tiny", "small", "paper"], help="model size (tiny)")
    parser.add_argument("--max-steps", type=int, default=S, help="training steps (1500)")
    parser.add_argument("--max-minutes", type=float, default=S,
                        help="wall-clock budget; stops cleanly with a checkpoint (campaign default 5)")
    parser.add_argument("--batch-size", type=int, default=S, help="training batch size (64)")
    parser.add_argument("--learning-rate", type=float, default=S)
    parser.add_argument("--train-split", default=S, help="split to train on (default: train, else val)")
    parser.add_argument("--device", dest="train_device", default=S, help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--prediction", default=S, choices=["eps", "v"], help="denoiser target (eps)")
    parser.add_argument("--slot-loss", default=S, choices=["balanced", "slots"],
                        help="balanced (default; for composition-conditioned runs) or slots (unconditional sampling)")
    parser.add_argument("--periodic-loss", action="store_true", default=S,
                        help="atom targets at the periodic image nearest the model's estimate (off: it did not help "
                             "on perov_5, benchmarks/RESULTS.md)")
    parser.add_argument("--init-from", default=S,
                        help="fine-tune from a checkpoint path or a shipped model, e.g. pretrained:perov_5")
    parser.add_argument("--threads", type=int, default=S, help="torch CPU threads for training (0 = every core)")
    parser.add_argument("--lr-decay-steps", type=int, default=S, help="cosine decay horizon (default: --max-steps)")
    parser.add_argument("--keep-every", type=int, default=S, help="also keep checkpoints/step-N.pt every N steps")


def _generate_args(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    parser.add_argument("--num-samples", type=int, default=S,
                        help="unconditional samples (200); in a campaign it replaces the demo's target compositions")
    parser.add_argument("--compositions", default=S,
                        help="comma-separated cell formulas, e.g. SrTiO3,Ba2Ti2O6 (conditional; campaign default: "
                             "8 perov_5 test compositions, see flows/params.py)")
    parser.add_argument("--samples-per-composition", type=int, default=S)
    parser.add_argument("--gen-batch-size", type=int, default=S, help="samples per generation task (100; campaign 32)")
    parser.add_argument("--sampler", default=S, choices=SAMPLERS,
                        help="ddim (default), ddpm, or dpm++2m: DPM-Solver++, as good in ~10-20 steps as DDIM in 50")
    parser.add_argument("--steps", type=int, default=S, help="sampling steps (50; DDPM: 1000 for the exact sampler)")
    parser.add_argument("--guidance", type=float, default=S, help="classifier-free guidance weight (1.0)")
    parser.add_argument("--seed", type=int, default=S)
    parser.add_argument("--unconditional", default=S, choices=["composition-first", "joint"],
                        help="unconditional samples: composition from the model's learned prior, then structure "
                             "(default), or both at once")
    if device:
        parser.add_argument("--device", dest="gen_device", default=S, help="auto, cuda or cpu")
        parser.add_argument("--model", default=S,
                            help="checkpoint path or shipped model, e.g. pretrained:perov_5 (default: the campaign's)")


def _relax_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calculator", default=S, help="chgnet (default), sevennet, emt, gpaw, vasp, espresso")
    parser.add_argument("--calculator-model", default=S, help="model name of the calculator (chgnet 0.3.0, sevennet 7net-0)")
    parser.add_argument("--fmax", type=float, default=S, help="force threshold, eV/A (0.05)")
    parser.add_argument("--relax-steps", type=int, default=S, help="optimizer step limit per structure (300; campaign 150)")
    parser.add_argument("--optimizer", default=S, choices=["FIRE", "BFGS"], help="FIRE (campaign: BFGS)")
    parser.add_argument("--time-limit", type=float, default=S, help="seconds per structure (120; campaign 20)")
    parser.add_argument("--chunk-size", type=int, default=S, help="structures per relax task / part file (10)")
    parser.add_argument("--max-sites", type=int, default=S, help="cells with more sites are recorded as skipped (64)")


def _score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", default=S,
                        help="offline (default: elemental + binary prototypes + dataset crystals relaxed with the same "
                             "calculator), mp (needs MP_API_KEY), or a parquet/CSV path (id, composition, "
                             "energy_per_atom, source, energy_scale)")
    parser.add_argument("--reference-size", type=int, default=S, help="dataset crystals in the offline reference (24)")
    parser.add_argument("--metastable-cutoff", type=float, default=S, help="eV/atom above the hull (0.1)")
    parser.add_argument("--use-metastable", action="store_true", default=S, help="S.U.N. counts metastable as stable")


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-dataset", default=S, help="metric cutoffs of perov_5 | carbon_24 | mp_20 (default: the source)")
    parser.add_argument("--struct-cutoff", type=float, default=S)
    parser.add_argument("--comp-cutoff", type=float, default=S)
    parser.add_argument("--n-eval", type=int, default=S, help="valid samples for coverage/EMD (1000)")
    parser.add_argument("--eval-workers", type=int, default=S, help="fingerprint processes (2)")
    parser.add_argument("--coverage-on", default=S, choices=["all", "subset"],
                        help="COV over every valid sample (CDVAE, default) or the --n-eval subset (campaign)")
    parser.add_argument("--reference-limit", type=int, default=S,
                        help="seeded subset of the reference split (default: all; campaign 1000)")
    parser.add_argument("--no-matching", dest="matching", action="store_false", default=S,
                        help="skip uniqueness/novelty (one formula group of thousands, e.g. carbon_24, takes hours)")
    parser.add_argument("--cache-dir", default=S, help="fingerprint cache (default: <results-root>/.cache/fingerprints)")
    parser.add_argument("--task", dest="eval_task", default=S, choices=["generation", "csp"],
                        help="generation metrics of the generated samples (default), or crystal structure prediction "
                             "with the trained model (k samples per test crystal; writes evaluate/csp-k<k>/)")
    parser.add_argument("--k", dest="csp_k", type=int, default=S, help="csp: samples per test crystal (1; DiffCSP also 20)")
    parser.add_argument("--csp-targets", type=int, default=S, help="csp: seeded subset of test crystals (default: all)")


def _discovery_args(parser: argparse.ArgumentParser) -> None:
    """discover-benchmark options; dests are prefixed `discovery_` and fill flows.discovery.DiscoveryParams."""
    add = parser.add_argument
    add("--checkpoint", dest="discovery_checkpoint", default=S, help="model checkpoint (<campaign>/train/checkpoints/last.pt)")
    add("--compositions", dest="discovery_compositions", default=S,
        help="comma-separated cell formulas (default: draw --n-compositions from the perov_5 test split)")
    add("--n-compositions", dest="discovery_n_compositions", type=int, default=S, help="compositions to draw (20)")
    add("--known", dest="discovery_known", default=S, help="perov_5 (its test split) or a structure-table parquet")
    add("--k", dest="discovery_relaxations_per_composition", type=int, default=S,
        help="candidates (relaxations) per composition and method (20)")
    add("--sampler", dest="discovery_sampler", default=S, choices=SAMPLERS)
    add("--sampling-steps", dest="discovery_steps", type=int, default=S, help="sampling steps (50)")
    add("--guidance", dest="discovery_guidance", type=float, default=S, help="classifier-free guidance weight (1.0)")
    add("--gen-batch-size", dest="discovery_batch_size", type=int, default=S, help="samples per generation batch (100)")
    add("--gen-device", dest="discovery_device", default=S, help="auto, cuda or cpu")
    add("--tolerance", dest="discovery_tolerance", type=float, default=S, help="eV/atom above known = reached (0.010)")
    add("--all-energies", dest="discovery_converged_only", action="store_false", default=S,
        help="also score unconverged relaxations (default: converged ones only)")
    add("--seed", dest="discovery_seed", type=int, default=S)


STAGE_ARGS = {"tensorize": [_tensorize_args], "train": [_train_args], "generate": [_generate_args],
              "relax": [_relax_args], "score": [_relax_args, _score_args], "evaluate": [_evaluate_args]}
HELP = {"fetch": "load a dataset into <campaign>/fetch/structures.parquet",
        "tensorize": "encode the fetched structures as UniMat tensors",
        "train": "train (or resume) the UniMat model on the tensorized dataset",
        "generate": "generate structures with the trained model",
        "relax": "relax the generated structures (chunked, resumable)",
        "score": "reference hull, formation/decomposition energies, S.U.N. (calculator options = the relax stage's)",
        "evaluate": "benchmark metrics of the generated structures vs the fetched test split"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimat", description="UniMat materials discovery pipeline (Prefect flows).")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=HELP["fetch"])
    _run_args(fetch)
    _source_args(fetch)
    for stage, adders in STAGE_ARGS.items():
        stage_parser = sub.add_parser(stage, help=HELP[stage])
        _run_args(stage_parser)
        for add in adders:
            add(stage_parser)
    campaign = sub.add_parser("campaign", help="run the discovery campaign (all stages, resuming finished ones)")
    _run_args(campaign)
    _source_args(campaign)
    _tensorize_args(campaign)
    _train_args(campaign)
    _generate_args(campaign, device=False)
    _relax_args(campaign)
    _score_args(campaign)
    _evaluate_args(campaign)
    bench = sub.add_parser("discover-benchmark", help="discovery benchmark: conditional UniMat vs random structure "
                           "search, same calculator and number of relaxations (report, plot, artifacts)")
    _run_args(bench)
    _relax_args(bench)
    _discovery_args(bench)
    campaign.add_argument("--from-scratch", action="store_true", default=S,
                          help="train a new model even where the bundled source has a shipped one (pretrained:<source>)")
    campaign.add_argument("--stop-after", default=S, choices=["fetch", "tensorize", "train", "generate", "relax",
                                                              "score", "evaluate"], help="last stage to run (evaluate)")
    return parser


def _groups(args: argparse.Namespace) -> dict[str, dict]:
    """Given options as {group: {field: value}}."""
    groups: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if dest in FIELDS:
            group, field = FIELDS[dest]
            if dest in LISTS:
                value = tuple(v for v in value.split(",") if v)
            groups.setdefault(group, {})[field] = value
    if args.command == "campaign":
        if "train_device" in vars(args):  # one --device for the whole campaign
            groups.setdefault("generate", {})["device"] = args.train_device
        generate = groups.get("generate", {})
        if "num_samples" in generate and "compositions" not in generate:  # unconditional instead of the demo's targets
            generate["compositions"] = ()
    return groups


def _option(group: str, field: str) -> str:
    """The command-line option of a parameter field (for error messages)."""
    if group == "run":
        return "--" + field.replace("_", "-")
    dest = next((d for d, target in FIELDS.items() if target == (group, field)), None)
    return OPTION_OF_DEST.get(dest, "--" + dest.replace("_", "-")) if dest else field


def _validated(group: str, make, /, *args, **values):
    """`make(*args, **values)`, with validation errors turned into one line per mistake naming its option."""
    try:
        return make(*args, **values)
    except ValidationError as exc:
        mistakes = []
        for error in exc.errors():
            where = _option(group, str(error["loc"][0])) if error["loc"] else f"--{group}"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] != "value_error":
                message += f" (got {error['input']!r})"
            mistakes.append(f"{where}: {message}")
        raise UserInputError("; ".join(mistakes)) from exc


def _overwrite(args: argparse.Namespace) -> tuple[str, ...]:
    if args.overwrite is None:
        return ()
    if args.overwrite == "":
        if args.command == "campaign":
            raise UserInputError("--overwrite: name the stages to redo in a campaign, e.g. --overwrite generate")
        return (args.command,)
    return tuple(s.strip() for s in args.overwrite.split(",") if s.strip())


def _params(args: argparse.Namespace) -> dict:
    """Validated flow parameters for the chosen subcommand; a bad value raises UserInputError naming its option."""
    from flows import params as p
    from unimat_core.datasets.source import DatasetSource

    models = {"tensorize": p.TensorizeParams, "train": p.TrainParams, "generate": p.GenerateParams,
              "relax": p.RelaxParams, "score": p.ScoreParams, "evaluate": p.EvaluateParams}
    run = _validated("run", p.RunParams, campaign=args.campaign, overwrite=_overwrite(args),
                     **({"results_root": args.results_root} if args.results_root else {}))
    given = _groups(args)
    params: dict = {"run": run}
    if args.command == "discover-benchmark":
        from flows.discovery import DiscoveryParams

        fields = {k.removeprefix("discovery_"): v for k, v in vars(args).items() if k.startswith("discovery_")}
        if "compositions" in fields:
            fields["compositions"] = tuple(c for c in fields["compositions"].split(",") if c)
        return {**params, "discovery": _validated("discovery", DiscoveryParams, **fields),
                "relax": _validated("relax", p.RelaxParams, **given.get("relax", {}))}
    if "source" in vars(args):
        params["source"] = _validated("source", DatasetSource.parse, args.source,
                                      splits=tuple(s for s in args.splits.split(",") if s))
    if args.command == "campaign":
        defaults = p.CampaignParams(shipped_model=False)  # the shipped model is chosen for the actual source below
        for group, model in models.items():
            base = getattr(defaults, group).model_dump()
            params[group] = _validated(group, model, **{**base, **given.get(group, {})})
        if "stop_after" in vars(args):
            params["stop_after"] = args.stop_after
        if "from_scratch" in vars(args):
            params["shipped_model"] = not args.from_scratch
        return {"params": p.CampaignParams(**params)}
    for group in {"score": ["relax", "score"]}.get(args.command, [args.command]):
        if group in models:
            params[group] = _validated(group, models[group], **given.get(group, {}))
    return params


class _QuietUserErrors(logging.Filter):
    """Prefect logs a failed run's exception with its traceback; for a user mistake the message is enough."""

    def __init__(self, kinds: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.kinds):
            record.exc_info, record.exc_text = None, None
        return True


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    if args.debug:
        raise exc
    print(f"unimat {args.command}: {exc}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = _params(args)
        from flows.preflight import preflight

        preflight(args.command, params)
    except UserInputError as exc:
        return _fail(args, exc, 2)
    except MissingStageOutput as exc:
        return _fail(args, exc, 1)
    _ensure_prefect_home()
    user_api = os.environ.get("PREFECT_API_URL")
    from flows.server import command_server

    with command_server():
        from flows import stages
        from flows.campaign import discovery_campaign
        from flows.discovery import discovery_benchmark
        from unimat_core.datasets.materials_project import MaterialsProjectError
        from unimat_core.model.generation import CompositionError

        user_errors = (UserInputError, CompositionError)
        if not args.debug:
            for name in ("prefect.flow_runs", "prefect.task_runs"):
                logger = logging.getLogger(name)
                if not any(isinstance(f, _QuietUserErrors) for f in logger.filters):  # main() may run again
                    logger.addFilter(_QuietUserErrors((*user_errors, MissingStageOutput)))
        flow = {"fetch": stages.fetch_flow, "tensorize": stages.tensorize_flow, "train": stages.train_flow,
                "generate": stages.generate_flow, "relax": stages.relax_flow, "score": stages.score_flow,
                "evaluate": stages.evaluate_flow, "campaign": discovery_campaign,
                "discover-benchmark": discovery_benchmark}[args.command]
        try:
            result = flow(**params)
        except user_errors as exc:
            return _fail(args, exc, 2)
        except (MissingStageOutput, MaterialsProjectError) as exc:
            return _fail(args, exc, 1)
    print(json.dumps(result, indent=2, default=str))
    run = params["params"].run if "params" in params else params["run"]
    print(f"\nResults: {run.layout().campaign_dir}")
    if user_api:
        print(f"Runs, logs and artifacts are in the Prefect UI served by {user_api.removesuffix('/api')}")
    else:
        home = os.environ["PREFECT_HOME"]
        start = "make ui" if Path(home).resolve() == (Path.cwd() / ".prefect").resolve() else \
            f"PREFECT_HOME={home} prefect server start --host 127.0.0.1 --port 4200"
        print(f"Runs, logs and artifacts were recorded in Prefect's database under {home}. To browse them: `{start}` "
              "(a Prefect server on that database), then open http://127.0.0.1:4200 (Runs, Artifacts). "
              "With the server up, export PREFECT_API_URL=http://127.0.0.1:4200/api to send new runs to it live.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
