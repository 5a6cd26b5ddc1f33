"""Typed flow parameters, validated before any work starts: each setting is declared here once, with its
default, type, bounds and help (or in the core config a stage takes directly, e.g. `dft.relax.RelaxConfig`).

The `unimat` options are derived from these fields (flows/cli.py): a field's option is `--<field-name>` unless
its `json_schema_extra` names another (`{"option": "--relax-steps"}`); a bool whose default is True becomes a
`--no-...` switch. Deployment parameters are the same models (Prefect reads the flow signatures).
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dft.calculators import CalculatorConfig
from dft.relax import RelaxConfig
from flows.profiles import DEMO_COMPOSITIONS  # noqa: F401 - the tests name it here
from flows.profiles import DEFAULT_PROFILE, PROFILES, Profile, check_profiles
from unimat_core.datasets.source import DatasetSource
from unimat_core.metrics.evaluate import MetricsConfig
from unimat_core.model.config import CSPConfig, DiffusionConfig, GenerateConfig, TrainConfig
from unimat_core.run_layout import RunLayout, fingerprint_cache
from unimat_core.settings import exposed_fields, option
from unimat_core.tensor_store import TensorizeConfig

Stage = Literal["fetch", "tensorize", "train", "generate", "relax", "score", "evaluate"]


def default_results_root() -> str:
    return os.environ.get("UNIMAT_RESULTS_ROOT", "runs")


class StageSettings(BaseModel):
    """Parameters of one stage. `settings()` is what its provenance record keeps: every field that can change
    the stage's results, i.e. all but `RUN_ONLY` (how the work is spread or where it runs). `RECORDED_IF_SET`:
    fields that became options after records existed, kept out of the record while at the value earlier runs
    used (their default, or `VALUE_BEFORE`'s for a setting resolved before it is recorded) so that earlier run
    folders still resume."""

    model_config = ConfigDict(extra="forbid")
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset()
    RECORDED_IF_SET: ClassVar[frozenset[str]] = frozenset()
    VALUE_BEFORE: ClassVar[dict[str, object]] = {}

    def settings(self) -> dict:
        data = self.model_dump(mode="json", exclude=set(self.RUN_ONLY))
        for name in self.RECORDED_IF_SET:
            if getattr(self, name) == self.VALUE_BEFORE.get(name, type(self).model_fields[name].default):
                data.pop(name, None)
        return data


class RunParams(BaseModel):
    """Where a campaign lives (`<results_root>/<campaign>/<stage>/`) and which stages to redo from scratch."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(default="demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    results_root: str = Field(default_factory=default_results_root)
    overwrite: tuple[Stage, ...] = Field(default=(), description="stages whose existing output (made with other "
                                         "settings) is set aside and recomputed, with every stage made from it")
    round: int | None = Field(default=None, ge=1, le=9999, description="the round of a campaign run in rounds whose "
                              "generate/relax/score/evaluate stages these are (<campaign>/round-NNNN/); set by the "
                              "campaign flow")

    @field_validator("results_root")
    @classmethod
    def _folder(cls, value: str) -> str:
        path = Path(value).resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"{existing} is a file: the results root must be a folder (or not exist yet)")
        return value

    def layout(self) -> RunLayout:
        return RunLayout(Path(self.results_root).resolve(), self.campaign, self.round)


class TensorizeParams(StageSettings, TensorizeConfig):
    """Tensor encoding: the settings are `TensorizeConfig`'s, declared there once; a TensorizeParams *is* the
    config `unimat_core.tensor_store.tensorize_frame` reads."""

    RUN_ONLY = frozenset({"shard_size"})


def _checkpoint_reference(value: str | None) -> str | None:
    """A shipped model name (checked against the package) or an existing checkpoint path (made absolute)."""
    from unimat_core.model.pretrained import is_pretrained, resolve

    if value is None:
        return None
    if is_pretrained(value):
        resolve(value)  # raises PretrainedError (a ValueError) naming the shipped models
        return value
    path = Path(value)
    if not path.exists():
        raise ValueError(f"checkpoint {value!r} not found (a path, or pretrained:<name>)")
    return str(path.resolve())


def _checked_by(check, *fields: str):
    """A validator running `check(value)` on `fields` once their type is checked."""
    return field_validator(*fields)(classmethod(lambda cls, value: check(value)))


class TrainParams(StageSettings, TrainConfig):
    """Model training: the settings are `TrainConfig`'s, declared there once (defaults: the `tiny` preset sized for a
    short CPU run); a TrainParams *is* the config `unimat_core.model.training.train` reads, once the stage has set
    its dataset and out_dir.

    The budget (max_steps, max_minutes) is not part of what made the model: a rerun with a larger budget
    resumes the same training, and the stages made from the model see the new checkpoint."""

    RUN_ONLY = frozenset({"max_steps", "max_minutes", "device", "cpu_threads", "keep_every", "dataset", "out_dir",
                          "checkpoint_every", "log_every"})
    # options since these fields became TrainConfig's own declarations: earlier records hold none of them
    RECORDED_IF_SET = frozenset({"model", "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "augment",
                                 "composition_prior"})

    _init_from = _checked_by(_checkpoint_reference, "init_from")

    def settings(self) -> dict:
        """As records have always kept them: the exposed diffusion settings by name, the rest only if changed."""
        data = super().settings()
        diffusion = data.pop("diffusion")
        for name in exposed_fields(TrainConfig):
            data[name] = diffusion.pop(name)
        default = DiffusionConfig().as_dict()
        changed = {name: value for name, value in diffusion.items() if value != default[name]}
        return {**data, **({"diffusion": changed} if changed else {})}


class GenerateParams(StageSettings, GenerateConfig):
    """Sampling, N unconditional structures or K per composition: the settings are `GenerateConfig`'s, declared
    there once; `model` picks another checkpoint than the campaign's trained model, which the stage sets."""

    RUN_ONLY = frozenset({"device", "cpu_threads", "checkpoint", "out_dir"})
    # recorded resolved (the model's recommendation filled in); every run before the option sampled at 1
    RECORDED_IF_SET = frozenset({"noise_scale"})
    VALUE_BEFORE = {"noise_scale": 1.0}

    model: str | None = Field(default=None, description="checkpoint path or shipped model, e.g. pretrained:perov_5 "
                              "(default: the campaign's trained model)")
    _model = _checked_by(_checkpoint_reference, "model")

    @field_validator("compositions")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from pymatgen.core import Composition, Element

        for formula in value:
            try:
                elements = Composition(formula).elements
            except Exception as exc:
                raise ValueError(f"{formula!r} is not a chemical formula") from exc
            unknown = [getattr(e, "symbol", str(e)) for e in elements if not isinstance(e, Element)]
            if unknown:
                raise ValueError(f"{formula!r}: {', '.join(unknown)} is not an element")
        return value

    def for_run(self, checkpoint: str, out_dir: str) -> GenerateParams:
        """This config with the model to sample (the campaign's trained model unless `model` names another), the
        folder of its parts and the sampling settings the model recommends (unless given) set: the settings
        sampled with are the ones the stage records, so a changed recommendation is a changed setting."""
        return self.model_copy(update={"checkpoint": self.model or checkpoint, "out_dir": out_dir}).for_model(
            self.model or checkpoint)

    def for_model(self, checkpoint: str | Path) -> GenerateParams:
        """These settings with what they leave unset (guidance, steps, noise scale) as `checkpoint` recommends (see
        unimat_core.model.sampling_defaults)."""
        from unimat_core.model.pretrained import checkpoint_file
        from unimat_core.model.sampling_defaults import read_sampling_defaults, with_recommended

        return with_recommended(self, read_sampling_defaults(checkpoint_file(checkpoint)))


class RelaxParams(StageSettings, RelaxConfig):
    """Relaxation of the generated candidates (and of the offline reference, so energies share a calculator).

    The convergence and budget fields are `dft.relax.RelaxConfig`'s, declared there once: a RelaxParams *is* the
    RelaxConfig the relaxation engine reads (dft.batch), plus the calculator and how the work is chunked."""

    RUN_ONLY = frozenset({"chunk_size", "device", "batch_atoms"})
    RECORDED_IF_SET = frozenset({"engine"})

    calculator: str = Field(default="chgnet", description="chgnet, sevennet, emt, gpaw, vasp, espresso")
    model: str | None = option("--calculator-model", "model name of the calculator (chgnet 0.3.0, sevennet 7net-0)",
                               default=None)
    device: str = Field(default="auto", description="where ML potentials run: auto (cuda if available), cuda or cpu")
    chunk_size: int = Field(default=10, ge=1, description="structures per relax task / part file")
    max_sites: int | None = Field(default=64, ge=1, description="cells with more sites are recorded as skipped, not "
                                  "relaxed")

    @field_validator("calculator")
    @classmethod
    def _known(cls, value: str) -> str:
        from dft.calculators import available_calculators

        if value not in available_calculators():
            raise ValueError(f"unknown calculator {value!r}; known: {available_calculators()}")
        return value

    @field_validator("time_limit_s")
    @classmethod
    def _some_time(cls, value: float) -> float:
        if value <= 0:  # the core allows 0 (a test's instant time-out); a stage run needs time to relax
            raise ValueError("must be greater than 0")
        return value

    def calculator_config(self) -> CalculatorConfig:
        """The calculator every chunk builds (one torch thread: workers, not threads, use the cores)."""
        return CalculatorConfig(name=self.calculator, device=self.device, model=self.model)

    def relax_config(self) -> RelaxConfig:
        """Only the RelaxConfig fields: what the reference cache is keyed by (chunking does not change energies)."""
        return RelaxConfig.model_validate(self.model_dump(include=set(RelaxConfig.model_fields)))


class ScoreParams(StageSettings):
    """Reference hull and stability scoring.

    `reference`: "offline" (elemental and binary prototypes of the candidates' chemical systems, cached across
    campaigns, + up to `reference_size` dataset structures of any split inside those systems, all relaxed with the
    relax stage's calculator and settings), "mp" (Materials Project, needs MP_API_KEY and network) or a path to a
    parquet/CSV table with id, composition, energy_per_atom, source, energy_scale (see dft.energy_scale).
    `elements_per_task`: chemical systems (elements and element pairs) per prototype-relaxation task.
    """

    RUN_ONLY = frozenset({"elements_per_task"})

    reference: str = Field(default="offline", description="offline (elemental + binary prototypes + dataset "
                           "crystals relaxed with the same calculator), mp (needs MP_API_KEY), or a parquet/CSV path "
                           "(id, composition, energy_per_atom, source, energy_scale)")
    reference_size: int = Field(default=24, ge=0, description="dataset crystals in the offline reference")
    seed: int = option("--score-seed", "seed of the dataset crystals' draw", default=0)
    metastable_cutoff: float = Field(default=0.1, ge=0, description="eV/atom above the hull")
    use_metastable: bool = Field(default=False, description="S.U.N. counts metastable as stable (default: stable = "
                                 "on or below the hull, as Matbench Discovery)")
    elements_per_task: int = Field(default=8, ge=1, description="chemical systems per prototype-relaxation task")

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if value in ("offline", "mp"):
            return value
        from dft.hull import read_reference

        path = Path(value)
        if not path.exists():
            raise ValueError(f"reference must be 'offline', 'mp' or an existing parquet/CSV file; {value!r} not found")
        read_reference(path)  # the table's rows are checked now, not after relaxing the reference
        return str(path.resolve())

    @property
    def kind(self) -> str:
        return self.reference if self.reference in ("offline", "mp") else "file"


class EvaluateParams(StageSettings, MetricsConfig):
    """Benchmark metrics (CDVAE protocol + uniqueness/novelty): the settings are `MetricsConfig`'s, declared there
    once (cutoffs default to the dataset's), plus which task to run and the CSP settings."""

    RUN_ONLY = frozenset({"n_workers", "cache_dir"})
    # fields of MetricsConfig that are no options: earlier records hold none of them
    RECORDED_IF_SET = frozenset({"ltol", "stol", "angle_tol", "csp_guidance", "csp_noise_scale"})

    task: Literal["generation", "csp"] = Field(
        default="generation", description="generation: CDVAE metrics of the generated samples; csp: crystal "
                                          "structure prediction with the trained model, k samples of each reference "
                                          "crystal's composition (writes evaluate/csp-k<k>/)")
    # the CSP settings are CSPConfig's declarations, reused (not copied)
    k: int = CSPConfig.model_fields["k"]
    csp_targets: int | None = CSPConfig.model_fields["n_targets"]
    steps: int | None = CSPConfig.model_fields["steps"]
    csp_guidance: float | None = CSPConfig.model_fields["guidance"]
    csp_noise_scale: float | None = CSPConfig.model_fields["noise_scale"]

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        from unimat_core.metrics.cdvae_constants import COV_CUTOFFS
        from unimat_core.metrics.evaluate import dataset_key

        if value is not None and dataset_key(value) not in COV_CUTOFFS:
            raise ValueError(f"no coverage cutoffs for dataset {value!r}; known: {sorted(COV_CUTOFFS)}")
        return value

    def metrics_config(self, dataset: str | None, results_root: str) -> MetricsConfig:
        """The MetricsConfig part of these parameters, with the fetched source's dataset and the results root's
        fingerprint cache where none is given."""
        return MetricsConfig(**{**self.model_dump(include=set(MetricsConfig.model_fields)),
                                "dataset": self.dataset or dataset,
                                "cache_dir": self.cache_dir or str(fingerprint_cache(Path(results_root).resolve()))})

    def csp_config(self) -> CSPConfig:
        """The config `unimat_core.metrics.csp.evaluate_csp` reads."""
        return CSPConfig(k=self.k, n_targets=self.csp_targets, seed=self.seed, steps=self.steps,
                         guidance=self.csp_guidance, noise_scale=self.csp_noise_scale,
                         n_workers=self.n_workers)


class RoundParams(StageSettings):
    """A campaign run in rounds (`--round next` or `--round N`; without it the campaign is the single run of
    before, in `<campaign>/<stage>/`): each round samples `samples` new candidates under
    `<campaign>/round-NNNN/`, with a seed derived from the generate seed and the round number, for targets
    chosen by the policy of `unimat_core.rounds` (user targets, exploration, exploitation of earlier finds);
    fetch, tensorize and train are shared by every round. The user targets default to the campaign's
    --compositions."""

    RUN_ONLY = frozenset({"round", "wait_lock"})

    round: str | None = option("--round", "run the campaign in rounds: 'next' starts a new round, N resumes round N "
                               "(default: one single run in <campaign>/<stage>/)", default=None)
    targets: tuple[str, ...] = option("--round-targets", "a round's user targets: formulas (SrTiO3) or chemical "
                                      "systems (Sr-Ti-O) (default: --compositions)", default=())
    samples: int = option("--round-samples", "candidates sampled per round", default=32, ge=1)
    explore: float = option("--explore", "share of a round's samples drawn unconditionally", default=0.25, ge=0, le=1)
    exploit: float = option("--exploit", "share of a round's samples at compositions near the lowest-energy finds "
                            "of earlier rounds", default=0.25, ge=0, le=1)
    exploit_top: int = option("--exploit-top", "lowest-energy finds the exploitation share works around", default=4,
                              ge=1)
    finetune: bool = option("--finetune", "fine-tune the model on earlier rounds' low-energy finds before each round",
                            default=False)
    finetune_steps: int = option("--finetune-steps", "fine-tuning steps per round", default=60, ge=1)
    finetune_cutoff: float = option("--finetune-cutoff", "finds within this many eV/atom of the hull are fine-tuned on",
                                    default=0.1, ge=0)
    finetune_lr: float = option("--finetune-lr", "fine-tuning learning rate", default=1e-4, gt=0)
    finetune_max_loss_ratio: float = option(
        "--finetune-max-loss-ratio", "a find is fine-tuned on as relaxed when the model's loss on it is within this "
        "factor of its loss on its training crystals, else as the sample it relaxed from", default=4.0, gt=0)
    wait_lock: float = option("--wait-lock", "seconds to wait for a running round of the campaign before refusing",
                              default=0.0, ge=0)

    @field_validator("round")
    @classmethod
    def _round(cls, value: str | None) -> str | None:
        from unimat_core.rounds import parse_round

        return None if value is None else parse_round(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from unimat_core.rounds import check_target

        return tuple(check_target(t) for t in value)

    @model_validator(mode="after")
    def _shares(self) -> RoundParams:
        if self.explore + self.exploit > 1 + 1e-9:
            raise ValueError(f"--explore {self.explore:g} + --exploit {self.exploit:g} exceed 1")
        return self


class CampaignParams(BaseModel):
    """Everything a discovery campaign needs. Every group starts from its stage's declared defaults with the
    overrides of `profile` (flows/profiles.py; `demo`, the default, is the README's `make demo`); a group given
    here (a dict or a model) is taken as it is, over the profile."""

    model_config = ConfigDict(extra="forbid")

    run: RunParams = RunParams()
    source: DatasetSource = DatasetSource()
    profile: Profile = Field(default=DEFAULT_PROFILE, description="named overrides of the stage defaults "
                             "(flows/profiles.py): demo (the small campaign of `make demo`) or stages (none)")
    tensorize: TensorizeParams = TensorizeParams()
    train: TrainParams = TrainParams()
    generate: GenerateParams = GenerateParams()
    relax: RelaxParams = RelaxParams()
    score: ScoreParams = ScoreParams()
    evaluate: EvaluateParams = EvaluateParams()
    rounds: RoundParams = RoundParams()
    stop_after: Stage = Field(default="evaluate", description="last stage to run")
    shipped_model: bool = Field(default=True, description="a bundled source with a shipped model (perov_5, "
                                "carbon_24) fine-tunes pretrained:<source> on its cropped grid instead of training "
                                "from scratch (unless --init-from is given)")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: object) -> object:
        """The groups not given start from the profile's overrides."""
        if not isinstance(data, dict):
            return data
        profile = PROFILES.get(data.get("profile", cls.model_fields["profile"].default), {})
        return {**{group: dict(values) for group, values in profile.items()}, **data}

    @model_validator(mode="after")
    def _start_from_shipped_model(self) -> CampaignParams:
        """Fill train.init_from (and the cropped grid that model was trained on) for bundled sources."""
        from unimat_core.model.pretrained import PREFIX, available

        if self.shipped_model and self.train.init_from is None and self.source.kind == "bundled" \
                and self.source.name in available() and not self.source.splits:
            self.train = self.train.model_copy(update={"init_from": PREFIX + self.source.name})
            self.tensorize = self.tensorize.model_copy(update={"crop_grid": True})
        return self


def stage_settings(stage: str, groups: dict, layout: RunLayout | None = None) -> dict:
    """The settings a stage's provenance record keeps; `groups` maps parameter group -> parameters
    (a CampaignParams' fields, or a stage flow's arguments). Score records the relax settings it relaxes
    its reference with; generate the sampling settings its model (`layout`'s trained one by default) recommends."""
    if stage == "fetch":
        return groups["source"].settings()
    if stage == "score":
        return {**groups["score"].settings(), "relax": groups["relax"].settings()}
    if stage == "generate" and layout is not None:
        generate: GenerateParams = groups["generate"]
        return generate.for_model(generate.model or layout.train_checkpoint).settings()
    return groups[stage].settings()


STAGE_MODELS: dict[str, type[BaseModel]] = {"tensorize": TensorizeParams, "train": TrainParams,
                                            "generate": GenerateParams, "relax": RelaxParams, "score": ScoreParams,
                                            "evaluate": EvaluateParams, "rounds": RoundParams}
check_profiles(STAGE_MODELS)  # a profile naming a field that is gone, or a bad value, fails on import
