"""Typed configuration of the UniMat model stages, each setting declared once: the denoiser (with named
presets), the diffusion, training, generation and crystal structure prediction (CSP). Plain pydantic (no torch), so the command line reads them
without loading the model code.

`tiny` trains to something useful on 2 CPU cores within 30 minutes on perov_5; `small` is for
a workstation; `paper` approaches the published model size and wants a GPU.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from unimat_core.settings import Config, nested, option

# How a sampler steps from noise to data: DDIM (deterministic), ancestral DDPM, DPM-Solver++(2M), or its
# stochastic twin SDE-DPM-Solver++(2M).
Sampler = Literal["ddim", "ddpm", "dpm++2m", "dpm++2m-sde"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
DEFAULT_SAMPLER: Sampler = "dpm++2m-sde"


class DenoiserConfig(Config):
    """Width and depth of the denoiser; the tensor shape comes from the UniMatSpec, not from here."""

    model_config = ConfigDict(frozen=True)
    ADDED_LATER = frozenset({"slot_embedding", "coord_fourier", "pair_bias", "pair_distances", "pair_displacement",
                             "pair_messages", "self_condition"})

    width: int = 64
    channel_mults: tuple[int, ...] = (1,)
    blocks_per_level: int = 2
    heads: int = 4
    time_dim: int = 128
    slot_attention: bool = True
    grid_attention: bool = True
    dropout: float = 0.0
    # A learned vector per slot index. Training permutes the slots of every element (their order is arbitrary),
    # so the index carries no information; off, the denoiser is exactly equivariant to that permutation.
    slot_embedding: bool = True
    # Frequencies k = 1..n of sin/cos(2 pi k x) of each noisy fractional coordinate fed beside x: periodic
    # features whose dot products in attention are functions of x_i - x_j modulo the cell (0: off).
    coord_fourier: int = Field(default=0, ge=0)
    # Frequencies k = 1..n of sin/cos(2 pi k (x_i - x_j)) of every pair of slots in a grid cell, with the noisy
    # lattice, mapped to a per-head bias of the slot attention: atoms of one element attend by their periodic
    # separation, the relative geometry (and the "that site is taken" signal) absolute coordinates only give a
    # small net indirectly (0: off).
    pair_bias: int = Field(default=0, ge=0)
    # Gaussian basis functions (0-6 A) of each slot pair's minimum-image distance in Angstrom, read off the noisy
    # coordinates and the noisy cell, added to the pair features above: bond lengths are what fix an atom's
    # place at low noise, and a net given fractional coordinates must otherwise learn the metric itself (0: off).
    pair_distances: int = Field(default=0, ge=0)
    # The coordinate output also gets sum_j w_ij (x_j - x_i) over the slots of a grid cell (nearest image), w_ij
    # read off the pair features and both slots' features: an EGNN-like update that moves an atom along the
    # directions to its neighbours, which absolute-coordinate outputs can only imitate (needs pair features).
    pair_displacement: bool = False
    # Each block also passes messages between the slots of a grid cell: m_ij from both slots' features and the
    # pair features, averaged over j and added to slot i (DiffCSP's CSPNet layer on UniMat's slots). Attention
    # with a pair bias only reweights features that know nothing of the pair; a message carries the pair's
    # geometry itself into the atom's features, e.g. its neighbour-distance pattern (needs pair features).
    pair_messages: bool = False
    # Self-conditioning (Chen, Zhang & Hinton, "Analog Bits", 2022): the denoiser also reads its own previous
    # estimate of the clean crystal (coordinates and cell; zeros when there is none). Training feeds it a
    # no-gradient first estimate on half the batches; samplers feed the last step's. Made for discrete-like
    # choices, such as which of two cations takes perov_5's A corner and which its B centre, that a denoiser
    # blind to its own last answer leaves undecided from step to step.
    self_condition: bool = False

    @model_validator(mode="after")
    def _shape(self) -> DenoiserConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if not self.channel_mults or self.blocks_per_level < 1:
            raise ValueError("need at least one level and one block per level")
        if self.pair_displacement and not self.uses_pairs:
            raise ValueError("pair_displacement reads the pair features: set pair_bias or pair_distances too")
        if self.pair_messages and not self.uses_pairs:
            raise ValueError("pair_messages read the pair features: set pair_bias or pair_distances too")
        return self

    @property
    def coordinate_features(self) -> int:
        """Input features per slot read off one set of coordinates: x and its sin/cos Fourier features."""
        return 3 * (1 + 2 * self.coord_fourier)

    @property
    def uses_pairs(self) -> bool:
        """Whether the denoiser builds slot-pair features (Fourier features or distances of slot pairs)."""
        return bool(self.pair_bias or self.pair_distances)


PRESETS: dict[str, DenoiserConfig] = {
    "tiny": DenoiserConfig(width=48, channel_mults=(1,), blocks_per_level=2, heads=4, time_dim=96),
    "small": DenoiserConfig(width=96, channel_mults=(1, 2), blocks_per_level=2, heads=4, time_dim=192),
    "paper": DenoiserConfig(width=256, channel_mults=(1, 2, 2), blocks_per_level=3, heads=8, time_dim=512),
}

Prediction = Literal["eps", "v"]


class DiffusionConfig(Config):
    """Noise schedule and training target. Checkpoints from before a field existed get its default, the
    setting they were trained with (e.g. `slot_loss`)."""

    model_config = ConfigDict(frozen=True)
    ADDED_LATER = frozenset({"train_timesteps"})

    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    prediction: Prediction = Field(default="eps", description="denoiser target")
    lattice_loss_weight: float = 1.0
    atom_loss_weight: float = 1.0
    # "balanced": atom and empty slots averaged separately and added, so the ~1-2 % atom slots weigh as much
    # as all empty ones: precise positions, which composition-conditioned sampling needs (it pins the empty
    # slots itself). "slots": one mean over every slot (UniMat's plain DDPM loss): the empty slots carry
    # most of the weight and the model learns early where atoms are NOT, which unconditional sampling needs
    # (a balanced tiny model scattered ~100 atoms over a perovskite cell; see benchmarks/RESULTS.md).
    slot_loss: Literal["balanced", "slots"] = Field(
        default="balanced", description="balanced suits composition-conditioned campaigns; slots (UniMat's plain "
                                        "loss) suits unconditional sampling, see benchmarks/RESULTS.md")
    cond_drop_prob: float = 0.1
    # True: an atom's coordinate target is the periodic image of its true position nearest the model's own
    # estimate (0.99 and 0.01 are one place), so an atom on the cell face does not get two distant targets.
    periodic_loss: bool = Field(default=False, description="atom targets taken at the periodic image nearest the "
                                "model's estimate (off: it did not help on perov_5, see benchmarks/RESULTS.md)")
    # Which timesteps training draws: "uniform" (DDPM), or "quadratic", t = T u^2 for uniform u: half the draws
    # below T/4, where the noise is smaller than a bond and the geometry of the neighbours fixes an atom's place
    # (the training noise distribution of Karras et al. 2022 puts its weight there for the same reason).
    train_timesteps: Literal["uniform", "quadratic"] = Field(
        default="uniform", description="timesteps training draws: uniform, or quadratic (denser at low noise)")


def preset(name: str, **overrides) -> DenoiserConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}")
    return DenoiserConfig.model_validate({**PRESETS[name].model_dump(), **overrides})


class TrainConfig(Config):
    """Every training setting, declared once: the `unimat train` options (flows.params.TrainParams is this config
    plus the stage's record rules) and what `train` reads. `dataset`/`out_dir` are set by the caller (the train
    stage: the campaign's tensors and train folder)."""

    dataset: str = option(None, "tensorized dataset folder", default="")
    out_dir: str = option(None, "training folder (checkpoints, metrics.csv, config.json)", default="")
    preset: Literal["tiny", "small", "paper"] = Field(default="tiny", description="model size")
    model: DenoiserConfig | None = option(None, "model size given field by field (overrides preset)", default=None)
    diffusion: DiffusionConfig = nested(DiffusionConfig, "prediction", "slot_loss", "periodic_loss")
    split: str | None = option("--train-split", "split to train on (default: train, else val)", default=None)
    batch_size: int = Field(default=64, ge=1, description="training batch size")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(default=100, ge=1, description="linear learning-rate warm-up steps")
    lr_decay_steps: int | None = Field(default=None, ge=1, description="cosine decay horizon (default: max_steps); "
                                       "fix it to extend a run later")
    grad_clip: float = Field(default=1.0, gt=0, description="gradient norm clip")
    ema_decay: float = Field(default=0.999, ge=0, le=1, description="EMA decay of the sampling weights")
    max_steps: int = Field(default=1500, ge=1, description="training steps (the run stops at this or at "
                           "--max-minutes, whichever comes first)")
    max_minutes: float | None = Field(default=None, gt=0, description="wall-clock budget; stops cleanly with a "
                                      "checkpoint (raise --max-steps too for a long budget: it may end the run first)")
    checkpoint_every: int = Field(default=100, ge=1, description="steps between checkpoints")
    keep_every: int | None = Field(default=None, ge=1, description="also keep checkpoints/step-N.pt every N steps "
                                   "(a learning curve reads them)")
    log_every: int = Field(default=10, ge=1, description="steps between metrics.csv rows")
    augment: bool = option("--no-augment", "random slot permutation (atoms of one element are interchangeable)",
                           default=True)
    augment_translate: bool = Field(default=False, description="random periodic shift of the origin (off: it "
                                    "slowed learning on perov_5, see benchmarks/RESULTS.md)")
    seed: int = option("--train-seed", "training seed", default=0)
    device: str = Field(default="auto", description="auto (cuda if available), cuda or cpu")
    cpu_threads: int = option("--threads", "torch threads on CPU (0 = every core, or OMP_NUM_THREADS where set; "
                              "lower it when the machine is shared)", default=0, ge=0)
    composition_prior: bool = option("--no-composition-prior", "also fit the learned composition prior (seconds) "
                                     "that unconditional sampling uses", default=True)
    init_from: str | None = Field(default=None, description="fine-tune from a checkpoint path or a shipped model, "
                                  "e.g. pretrained:perov_5 (its model size and diffusion settings are kept)")

    def denoiser_config(self) -> DenoiserConfig:
        return self.model or preset(self.preset)

    def resolved(self) -> dict:
        """As config.json and checkpoints keep it: the model size actually trained named, preset or not."""
        return {**self.as_dict(), "model": self.denoiser_config().as_dict()}


# How unconditional samples are drawn: "composition-first" samples a composition from the checkpoint's learned
# prior, then the structure conditionally (empty slots pinned); "joint" lets the denoiser decide the slots too.
Unconditional = Literal["composition-first", "joint"]


class GenerateConfig(Config):
    """Every sampling setting, declared once: the `unimat generate` options (flows.params.GenerateParams is this
    config plus the stage's checks) and what `generate` reads. `checkpoint`/`out_dir` are set by the caller."""

    checkpoint: str = option(None, "model checkpoint (a file, a training folder or pretrained:<name>)", default="")
    out_dir: str = option(None, "folder of the part files", default="")
    num_samples: int = Field(default=200, ge=1, description="unconditional samples; in a campaign it replaces the "
                             "demo's target compositions")
    compositions: tuple[str, ...] = Field(default=(), description="comma-separated cell formulas, e.g. "
                                          "SrTiO3,Ba2Ti2O6 (conditional sampling)")
    samples_per_composition: int = Field(default=4, ge=1, description="samples of each target composition")
    batch_size: int = option("--gen-batch-size", "samples per generation task", default=100, ge=1)
    # The stochastic solver by default: as good as the deterministic one at equal calls on perov_5 and twice its
    # validity on carbon_24, whose interchangeable slots a deterministic sampler merges (benchmarks/RESULTS.md)
    sampler: Sampler = Field(default=DEFAULT_SAMPLER, description="dpm++2m-sde (stochastic DPM-Solver++, see "
                             "benchmarks/RESULTS.md 'Sampler'), dpm++2m (deterministic), ddim, or ddpm")
    steps: int | None = Field(default=None, ge=1, description="sampling steps (default: the model's recommended count "
                              "for the sampler it names, its sampling.json, else 10; DDIM 50; DDPM 100, 1000 for the "
                              "exact sampler)")
    guidance: float | None = Field(default=None, ge=0, description="classifier-free guidance weight (default: the "
                                   "model's recommended weight, its sampling.json, else 1)")
    noise_scale: float | None = Field(default=None, ge=0, description="scale of the fresh noise a stochastic sampler "
                                      "(dpm++2m-sde, ddpm) adds each step: below 1 samples sharper and less diverse "
                                      "(default: the model's recommendation for the sampler it names, else 1)")
    seed: int = Field(default=0, description="sampling seed")
    use_ema: bool = option("--no-ema", "sample with the EMA weights", default=True)
    device: str = Field(default="auto", description="auto, cuda or cpu")
    cpu_threads: int = option("--threads", "CPU cores to sample on, one batch per core at once (0 = every core, "
                              "or OMP_NUM_THREADS where set; lower it when the machine is shared)", default=0, ge=0)
    unconditional: Unconditional = Field(
        default="composition-first", description="unconditional samples: a composition from the model's learned "
        "prior, then the structure (default), or both at once (joint; checkpoints without a prior fall back to it)")


class CSPConfig(Config):
    """Crystal structure prediction: k samples per reference crystal's composition; the options of
    `unimat evaluate --task csp` are these declarations (flows.params.EvaluateParams reuses them)."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(default=1, ge=1, description="csp: samples per reference crystal (DiffCSP reports 1 and 20)")
    n_targets: int | None = option("--csp-targets", "csp: seeded subset of reference crystals", default=None, ge=1)
    seed: int = 0
    sampler: Sampler = DEFAULT_SAMPLER
    steps: int | None = option("--csp-steps", "csp: sampler steps (default: the model's recommended count for the "
                               "sampler it names, its sampling.json, else 10)", default=None, ge=1)
    guidance: float | None = option("--csp-guidance", "csp: classifier-free guidance weight (default: the model's "
                                    "recommended weight, its sampling.json, else 1)", default=None, ge=0)
    noise_scale: float | None = option("--csp-noise-scale", "csp: scale of the stochastic sampler's fresh noise "
                                       "(default: the model's recommendation, else 1)", default=None, ge=0)
    batch_size: int = 256
    n_workers: int = 1  # processes for StructureMatcher

    @field_validator("k", "n_targets", mode="before")
    @classmethod
    def _at_least_one(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, not {value}")
        return value
