"""`unimat` command line: every subcommand runs its Prefect flow.

Options left out keep the pydantic defaults of the flow's parameters (for `campaign`, with the overrides of
its `--profile`, flows/profiles.py: `demo` unless told). Parameters, input files and existing stage outputs are
checked before Prefect starts (flows.preflight), so a mistake fails in well under a second and nothing is written.

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
from types import UnionType
from typing import Literal, Union, get_args, get_origin

from pydantic import ValidationError

from dft.discovery_benchmark import SET_BY_BENCHMARK
from flows.profiles import DEFAULT_PROFILE, PROFILES, overrides
from unimat_core.errors import UserInputError
from unimat_core.run_layout import MissingStageOutput
from unimat_core.settings import exposed_fields

S = argparse.SUPPRESS  # absent options are absent from the namespace: the pydantic default applies

# which parameter groups each command takes options of, with the fields it leaves out; an option that two
# groups of one command share (e.g. the campaign's --device) sets every field it names
STAGE_GROUPS: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "fetch": (),
    "tensorize": (("tensorize", frozenset()),),
    "train": (("train", frozenset()),),
    "generate": (("generate", frozenset()),),
    "relax": (("relax", frozenset()),),
    "score": (("relax", frozenset()), ("score", frozenset())),
    "evaluate": (("evaluate", frozenset()),),
    "campaign": (("tensorize", frozenset()), ("train", frozenset()), ("generate", frozenset({"model"})),
                 ("relax", frozenset()), ("score", frozenset()), ("evaluate", frozenset()), ("rounds", frozenset())),
    "discover-benchmark": (("relax", frozenset({"device"})), ("discovery", frozenset()),
                           ("generate", frozenset({"model"}) | SET_BY_BENCHMARK)),
}
ALIASES = {"discover-benchmark": {"--steps": ("--sampling-steps",), "--device": ("--gen-device",)}}  # older names


def _models() -> dict[str, type]:
    from dft.discovery_benchmark import DiscoveryParams
    from flows import params as p

    return {"tensorize": p.TensorizeParams, "train": p.TrainParams, "generate": p.GenerateParams,
            "relax": p.RelaxParams, "score": p.ScoreParams, "evaluate": p.EvaluateParams, "discovery": DiscoveryParams,
            "rounds": p.RoundParams}


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


def settable_fields(model: type) -> dict:
    """The fields a parameter model takes by name: its own and the sub-config fields it exposes
    (unimat_core.settings.nested), each with its one declaration."""
    return {**model.model_fields, **{name: info for name, (_, info) in exposed_fields(model).items()}}


def option_name(model: type, field: str) -> str | None:
    """A parameter field's command-line option: `--<field-name>`, or the one its declaration names."""
    extra = settable_fields(model)[field].json_schema_extra or {}
    return extra["option"] if "option" in extra else "--" + field.replace("_", "-")


def _argument(info, default_text: str, field: str) -> dict:
    """argparse keywords for one pydantic field (type, choices, flag) and its help with the default."""
    kind = info.annotation
    if get_origin(kind) in (Union, UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    help_text = f"{info.description or ''} ({default_text})".strip() if default_text else info.description
    if kind is bool:
        return {"action": "store_false", "help": f"turn off: {help_text}"} if info.default else \
            {"action": "store_true", "help": help_text}
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind)), "help": help_text}
    metavar = "A,B,..." if get_origin(kind) is tuple else field.upper()
    return {"type": kind, "help": help_text, "metavar": metavar} if kind in (int, float) else \
        {"help": help_text, "metavar": metavar}


def add_parameter_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of `command`, derived from its parameter models; the dest `group.field|group.field` says
    which fields an option sets."""
    models = _models()
    targets: dict[str, list[tuple[str, str]]] = {}
    for group, left_out in STAGE_GROUPS[command]:
        for field in settable_fields(models[group]):
            name = option_name(models[group], field)
            if name and field not in left_out:
                targets.setdefault(name, []).append((group, field))
    aliases = ALIASES.get(command, {})
    for name, fields in targets.items():
        group, field = fields[0]
        info = settable_fields(models[group])[field]
        value = info.get_default(call_default_factory=True)
        default = "" if value in (None, ()) or isinstance(value, bool) else f"default {value!r}"
        profile = overrides(DEFAULT_PROFILE, group)
        if field in profile and command in ("campaign", group):
            demo = f"campaign --profile {DEFAULT_PROFILE}: {profile[field]!r}"
            default = f"{default}; {demo}" if default else demo
        parser.add_argument(name, *aliases.get(name, ()), dest="|".join(f"{g}.{f}" for g, f in fields), default=S,
                            **_argument(info, default, field))


HELP = {"fetch": "load a dataset into <campaign>/fetch/structures.parquet",
        "tensorize": "encode the fetched structures as UniMat tensors",
        "train": "train (or resume) the UniMat model on the tensorized dataset",
        "generate": "generate structures with the trained model",
        "relax": "relax the generated structures (chunked, resumable)",
        "score": "reference hull, formation/decomposition energies, S.U.N. (calculator options = the relax stage's)",
        "evaluate": "benchmark metrics of the generated structures vs the fetched test split",
        "campaign": "run the discovery campaign (all stages, resuming finished ones); with --round next, one new "
                    "round of a campaign run in rounds (new seeds and targets, <campaign>/round-NNNN/, "
                    "<campaign>/discoveries.parquet)",
        "discover-benchmark": "discovery benchmark: conditional UniMat vs random structure search, same calculator and "
                              "number of relaxations (report, plot, artifacts)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unimat", description="UniMat materials discovery pipeline (Prefect flows).")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in STAGE_GROUPS:
        command_parser = sub.add_parser(command, help=HELP[command])
        _run_args(command_parser)
        if command in ("fetch", "campaign"):
            _source_args(command_parser)
        add_parameter_options(command_parser, command)
    campaign = sub.choices["campaign"]
    campaign.add_argument("--profile", default=S, choices=sorted(PROFILES),
                          help=f"named overrides of the stage defaults (flows/profiles.py): demo, the small campaign "
                               f"of `make demo`; stages, none ({DEFAULT_PROFILE})")
    campaign.add_argument("--from-scratch", action="store_true", default=S,
                          help="train a new model even where the bundled source has a shipped one (pretrained:<source>)")
    campaign.add_argument("--stop-after", default=S, choices=["fetch", "tensorize", "train", "generate", "relax",
                                                              "score", "evaluate"], help="last stage to run (evaluate)")
    return parser


def _groups(args: argparse.Namespace) -> dict[str, dict]:
    """Given options as {group: {field: value}} (a comma-separated list for a tuple field)."""
    models = _models()
    groups: dict[str, dict] = {}
    for dest, value in vars(args).items():
        for target in dest.split("|") if "." in dest else ():
            group, field = target.split(".")
            if get_origin(settable_fields(models[group])[field].annotation) is tuple:
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            groups.setdefault(group, {})[field] = value
    if args.command == "campaign":
        generate = groups.get("generate", {})
        if "num_samples" in generate and "compositions" not in generate:  # unconditional instead of the demo's targets
            generate["compositions"] = ()
    return groups


def _option(group: str, field: str) -> str:
    """The command-line option of a parameter field (for error messages)."""
    if group in ("run", "source"):
        return "--" + field.replace("_", "-")
    models = _models()
    if group in models and field in settable_fields(models[group]):
        return option_name(models[group], field) or field
    return field


def _exposed(group: str) -> dict:
    models = _models()
    return exposed_fields(models[group]) if group in models else {}


def _validated(group: str, make, /, *args, **values):
    """`make(*args, **values)`, with validation errors turned into one line per mistake naming its option."""
    try:
        return make(*args, **values)
    except ValidationError as exc:
        mistakes = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]  # a sub-config's field: its own name is the option
            where = _option(group, loc[1] if len(loc) > 1 and loc[1] in _exposed(group) else loc[0]) if loc \
                else f"--{group}"
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

    models = _models()
    run = _validated("run", p.RunParams, campaign=args.campaign, overwrite=_overwrite(args),
                     **({"results_root": args.results_root} if args.results_root else {}))
    given = _groups(args)
    params: dict = {"run": run}
    if "source" in vars(args):
        params["source"] = _validated("source", DatasetSource.parse, args.source,
                                      splits=tuple(s for s in args.splits.split(",") if s))
    if args.command == "campaign":
        profile = params["profile"] = vars(args).get("profile", p.CampaignParams.model_fields["profile"].default)
        for group, _ in STAGE_GROUPS["campaign"]:  # the profile's overrides, under the options given
            params[group] = _validated(group, models[group], **{**overrides(profile, group), **given.get(group, {})})
        if "stop_after" in vars(args):
            params["stop_after"] = args.stop_after
        if "from_scratch" in vars(args):
            params["shipped_model"] = not args.from_scratch
        return {"params": p.CampaignParams(**params)}
    for group, _ in STAGE_GROUPS[args.command]:
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
    from flows.server import command_server, prefect_environment

    prefect_environment(Path.cwd() / ".prefect")  # Prefect's database stays inside the project
    user_api = os.environ.get("PREFECT_API_URL")

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
