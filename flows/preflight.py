"""Checks of a command that need only its options, files and existing stage outputs.

The CLI runs them before any Prefect server starts, so a mistake costs well under a second and leaves
nothing behind: a user mistake raises UserInputError (exit 2), a stage run before the one that makes its
input raises MissingStageOutput (exit 1). The flows repeat the checks that matter as they run, so
deployments and Python callers get the same protection.
"""

from __future__ import annotations


from pydantic import BaseModel

from flows.params import CampaignParams, GenerateParams, RelaxParams, RunParams, TensorizeParams, stage_settings
from unimat_core.datasets.materials_project import MaterialsProjectError, require_api_key
from unimat_core.datasets.source import DatasetSource
from unimat_core.errors import UserInputError
from unimat_core.provenance import check_settings, read_record
from unimat_core.representation import UniMatSpec
from unimat_core.run_layout import ROUND_STAGES, STAGES, RunLayout, dependents


def check_source(source: DatasetSource) -> None:
    """The Materials Project needs a key; say so before anything starts (the network is checked at fetch)."""
    if source.kind == "materials_project":
        try:
            require_api_key()
        except MaterialsProjectError as exc:
            raise UserInputError(f"--source mp: {exc}") from None


def check_devices(groups: dict[str, BaseModel]) -> None:
    """A CUDA device asked for where there is none would fail only once its stage starts."""
    asked = {f"--device ({group})": getattr(groups.get(group), "device", "auto") for group in ("train", "generate", "relax")}
    cuda = {option: device for option, device in asked.items() if str(device).startswith("cuda")}
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise UserInputError(f"{', '.join(cuda)}: {next(iter(cuda.values()))} asked for, but torch sees no CUDA "
                                 "device here: use --device auto or cpu")


def check_compositions(compositions: tuple[str, ...], spec: UniMatSpec, where: str) -> None:
    """Every target composition must fit the model's grid and its L slots per element."""
    from unimat_core.model.generation import CompositionError, composition_counts

    for formula in compositions:
        try:
            composition_counts(formula, spec)
        except CompositionError as exc:
            raise UserInputError(f"--compositions: {exc} ({where})") from None


def tensor_spec(layout: RunLayout) -> UniMatSpec | None:
    """The tensorized dataset's spec, if the campaign has one."""
    from unimat_core.tensor_store import read_spec

    return read_spec(layout.tensors)


def _generate_targets(layout: RunLayout, generate: GenerateParams, tensorize: TensorizeParams | None) -> None:
    """Compositions against the model that will sample them: the checkpoint for `unimat generate`, the
    tensorized data (or a given L) for a campaign; a new campaign checks again after tensorize."""
    if not generate.compositions:
        return
    if tensorize is None:
        from unimat_core.model.checkpoint import load_checkpoint

        checkpoint = generate.model or layout.require(layout.train_checkpoint, made_by="train")
        spec = UniMatSpec.from_dict(load_checkpoint(checkpoint)["spec"])
        check_compositions(generate.compositions, spec, f"model {checkpoint}")
    elif (spec := tensor_spec(layout)) is not None:
        check_compositions(generate.compositions, spec, f"tensorized data {layout.tensors}")
    elif tensorize.max_atoms_per_element is not None:
        from pymatgen.core import Composition

        for formula in generate.compositions:
            most = max(Composition(formula).values())
            if most > tensorize.max_atoms_per_element:
                raise UserInputError(f"--compositions: {formula!r} has {most:g} atoms of one element, more than "
                                     f"--max-atoms-per-element {tensorize.max_atoms_per_element}")


def check_round(layout: RunLayout, asked: str, wait_lock: float) -> None:
    """A round number beyond the next one, or a round running now (unless told to wait), fails before Prefect starts;
    the round flow checks both again under the campaign's lock."""
    from unimat_core.campaign_lock import CampaignBusy, holder
    from unimat_core.rounds import resolve_round

    resolve_round(asked, layout.rounds())
    other = holder(layout.campaign_lock)
    if other is not None and not wait_lock:
        raise CampaignBusy(f"--round {asked}: {other.get('what', 'a round')} of this campaign is running (pid "
                           f"{other.get('pid')} on {other.get('host')}, since {other.get('since')}): two rounds of one "
                           f"campaign never run at once; wait for it (or pass --wait-lock SECONDS)")


def check_score_calculator(layout: RunLayout, relax: RelaxParams) -> None:
    """Energies on one hull must share a calculator: score with the one the candidates were relaxed with
    (known from the relax stage's record, so the check costs nothing and runs before the score stage
    touches its folder)."""
    record = read_record(layout, "relax")
    used = record.settings.get("calculator") if record else None
    if used and used != relax.calculator:
        raise UserInputError(f"the candidates of {layout.campaign!r} were relaxed with {[used]}, the reference would "
                             f"use {relax.calculator!r}: score with the relax stage's calculator (--calculator {used})")


_INPUTS = {"tensorize": ("structures", "fetch"), "train": ("tensors", "tensorize"),
           "generate": ("train_checkpoint", "train"), "evaluate": ("structures", "fetch")}


def _inputs_exist(layout: RunLayout, stage: str, groups: dict) -> None:
    """A stage run on its own needs its input stage's output (named in the error)."""
    if stage == "generate" and groups["generate"].model:
        return  # a given checkpoint (validated with the parameters) instead of the campaign's
    if stage in _INPUTS:
        attribute, made_by = _INPUTS[stage]
        layout.require(getattr(layout, attribute), made_by=made_by)
    if stage == "evaluate" and groups["evaluate"].task == "csp":  # CSP samples with the trained model itself
        layout.require(layout.train_checkpoint, made_by="train")
    elif stage in ("relax", "evaluate"):
        layout.require_parts(layout.generated, made_by="generate")
    if stage == "score" and not layout.relaxed.is_dir():
        layout.require_parts(layout.relaxed, made_by="relax")


def preflight(command: str, params: dict) -> None:
    """Every check that needs no server, for `unimat <command>` with validated `params` (see flows.cli)."""
    if command == "discover-benchmark":
        return
    if command == "campaign":
        campaign: CampaignParams = params["params"]
        run, groups = campaign.run, dict(campaign)
        stages = STAGES[: STAGES.index(campaign.stop_after) + 1]
    else:
        run, groups, stages = params["run"], params, (command,)
    layout = run.layout()
    check_devices(groups)
    if command == "campaign" and campaign.rounds.round is not None:
        check_round(layout, campaign.rounds.round, campaign.rounds.wait_lock)
    if command != "campaign":
        _inputs_exist(layout, command, groups)
    if "fetch" in stages:
        check_source(groups["source"])
    round_targets = command == "campaign" and campaign.rounds.round is not None and campaign.rounds.targets
    if "generate" in stages and not round_targets:  # a round's own targets replace --compositions (checked at its plan)
        _generate_targets(layout, groups["generate"], groups.get("tensorize") if command == "campaign" else None)
    if command == "score":
        check_score_calculator(layout, groups["relax"])
    if command == "evaluate" and groups["evaluate"].task == "csp":
        return  # CSP writes evaluate/csp-k<k>/ afresh each run: no stage record to agree with
    if command == "campaign" and campaign.rounds.round is not None:  # a round's own stages are checked as it runs
        stages = tuple(s for s in stages if s not in ROUND_STAGES)
    _settings(layout, run, stages, groups)


def _settings(layout: RunLayout, run: RunParams, stages: tuple[str, ...], groups: dict[str, BaseModel]) -> None:
    """Stop before any work when a stage's existing output was made with other settings."""
    redo = set(run.overwrite) | {d for stage in run.overwrite for d in dependents(stage)}
    for stage in stages:
        check_settings(layout, stage, stage_settings(stage, groups, layout), overwrite=stage in redo)
