"""Calculator registry: a typed config in, a real ASE calculator (plus its name and version) out.

In-process calculators (`chgnet`, `sevennet`, `emt`) are ASE calculators driven by quacc's
`Runner` (see `dft.relax`); the ML potentials also carry a batched view of the same model
(`BuiltCalculator.batched`, see `dft.potentials`), which `dft.engine` uses by default. `gpaw` runs in a Debian `/usr/bin/python3` subprocess (see
`dft.gpaw_runner`) because Debian's GPAW extension is built against numpy 1.x and cannot load
in the project venv (numpy 2.x). `vasp` and `espresso` are cluster codes driven by quacc's
recipes (see `dft.cluster`); they are not built here.

Each calculator also declares the energy scale of what it returns (`energy_scale`, see
`dft.energy_scale`): the score stage uses it to put candidates and reference on one footing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Literal

from ase.calculators.calculator import BaseCalculator

from dft.potentials import BatchedPotential, ChgnetBatch, SevennetBatch
from dft.energy_scale import EnergyScale, ScaleKind

# The one place a calculator name picks its backend. In-process calculators are built here (`_FACTORIES`,
# `register_calculator`); the others are never built in this process: each has a module whose
# `relax_out_of_process(structure, CalculatorConfig, RelaxConfig) -> RelaxResult` runs it (dft.relax routes them).
OUT_OF_PROCESS_BACKENDS = {"gpaw": "dft.gpaw_runner", "vasp": "dft.cluster", "espresso": "dft.cluster"}
OUT_OF_PROCESS = tuple(OUT_OF_PROCESS_BACKENDS)
TORCH_CALCULATORS = ("chgnet", "sevennet")  # run on the device the relax stage is given (`--device`)
DEFAULT_MODELS = {"chgnet": "0.3.0", "sevennet": "7net-0"}


class CalculatorUnavailable(RuntimeError):
    """The calculator cannot run here (package, weights or executable missing)."""


@dataclass(frozen=True)
class CalculatorConfig:
    """Which calculator and how to build it; `options` holds calculator-specific scalars."""

    name: str = "chgnet"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: str | None = None  # sevennet: "7net-0" (default); chgnet: "0.3.0" (default)
    options: dict = field(default_factory=dict)
    # torch intra-op threads while this calculator runs on CPU. 1 is the measured optimum for
    # 2-24 atom cells (2 threads were 100x slower on a busy 2-core machine); use workers for cores.
    cpu_threads: int = 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CalculatorConfig:
        return cls(**data)


@dataclass(frozen=True)
class BuiltCalculator:
    calculator: BaseCalculator
    name: str
    version: str
    cpu_threads: int | None = None  # None: leave torch's thread count alone (non-torch calculators)
    # many crystals per model call (dft.potentials), sharing the calculator's model; None: one by one only
    batched: BatchedPotential | None = None


def resolve_device(device: str) -> str:
    """CUDA when asked for or available ("auto"), else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _chgnet(config: CalculatorConfig) -> BuiltCalculator:
    try:
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError as exc:  # the `mlip` extra
        raise CalculatorUnavailable("chgnet is not installed: pip install '.[mlip]'") from exc
    model = CHGNet.load(model_name=config.model or DEFAULT_MODELS["chgnet"], use_device="cpu", verbose=False)
    calc = CHGNetCalculator(model=model, use_device=resolve_device(config.device), **config.options)
    return BuiltCalculator(calc, "chgnet", f"chgnet {_version('chgnet')} model {model.version}",
                           config.cpu_threads, ChgnetBatch(calc.model))


def _sevennet(config: CalculatorConfig) -> BuiltCalculator:
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise CalculatorUnavailable("sevenn is not installed: pip install '.[mlip]'") from exc
    model = config.model or DEFAULT_MODELS["sevennet"]
    calc = SevenNetCalculator(model, device=resolve_device(config.device), **config.options)
    return BuiltCalculator(calc, "sevennet", f"sevenn {_version('sevenn')} model {model}", config.cpu_threads,
                           SevennetBatch(calc.model, calc.cutoff, calc.modal))


def _emt(config: CalculatorConfig) -> BuiltCalculator:
    from ase.calculators.emt import EMT

    return BuiltCalculator(EMT(**config.options), "emt", f"ase {_version('ase')} EMT")


_FACTORIES: dict[str, Callable[[CalculatorConfig], BuiltCalculator]] = {
    "chgnet": _chgnet,
    "sevennet": _sevennet,
    "emt": _emt,
}

# Energy scale of each model, from its training data (see dft.energy_scale). CHGNet was trained on MPtrj's
# MP2020-corrected energies; SevenNet-0 and -l3i5 on MPtrj's raw PBE/PBE+U energies. A model not listed
# here is on its own scale (compared only with itself) until someone checks and declares it.
MODEL_SCALES: dict[tuple[str, str], ScaleKind] = {
    ("chgnet", "0.3.0"): "mp2020", ("chgnet", "0.2.0"): "mp2020",
    **{("sevennet", m): "gga_raw" for m in ("7net-0", "sevennet-0", "7net-0_11july2024", "7net-0_22may2024",
                                            "7net-l3i5", "sevennet-l3i5")},
}
_SCALES: dict[str, ScaleKind] = {}  # registered calculators: name -> declared scale
_PACKAGES = {"chgnet": "chgnet", "sevennet": "sevenn", "emt": "ase"}


def register_calculator(name: str, factory: Callable[[CalculatorConfig], BuiltCalculator], *,
                        scale: ScaleKind = "own") -> None:
    """Add an in-process calculator (e.g. a site-specific potential) under `name`, with the scale of its
    energies ("own" unless it reproduces MP's raw GGA or corrected energies)."""
    _FACTORIES[name] = factory
    _SCALES[name] = scale


def _energy_options(config: CalculatorConfig) -> dict:
    """The options that change energies; GPAW's with its defaults filled in (a default may change)."""
    if config.name != "gpaw":
        return dict(config.options)
    from dft.gpaw_runner import GpawConfig

    settings = asdict(GpawConfig.from_options(config.options))
    return {k: v for k, v in settings.items() if k not in ("python", "setup_path")}


def calculator_label(config: CalculatorConfig) -> str:
    """Name, model and energy-relevant options, e.g. `chgnet 0.3.0` or `gpaw {"ecut": 300.0, ...}`."""
    model = config.model or DEFAULT_MODELS.get(config.name)
    options = _energy_options(config)
    return " ".join(part for part in (config.name, model, json.dumps(options, sort_keys=True) if options else "")
                    if part)


def energy_scale(config: CalculatorConfig) -> EnergyScale:
    """The scale of this calculator's energies (declared here, once per calculator and model)."""
    model = (config.model or DEFAULT_MODELS.get(config.name, "")).lower()
    kind = MODEL_SCALES.get((config.name, model)) or _SCALES.get(config.name, "own")
    return EnergyScale(kind, "" if kind != "own" else calculator_label(config))


def calculator_identity(config: CalculatorConfig) -> dict:
    """What determines this calculator's energies (no device or threads): a cache key for its results."""
    version = _version(_PACKAGES[config.name]) if config.name in _PACKAGES else "unknown"
    if config.name == "gpaw":
        from dft.gpaw_runner import GpawConfig, check_gpaw

        version = check_gpaw(GpawConfig.from_options(config.options))
    return {"name": config.name, "model": config.model or DEFAULT_MODELS.get(config.name),
            "options": _energy_options(config), "version": version}


def available_calculators() -> list[str]:
    return sorted([*_FACTORIES, *OUT_OF_PROCESS])


def out_of_process_backend(name: str) -> Callable:
    """`relax_out_of_process` of the backend module that runs calculator `name` outside this process."""
    import importlib

    return importlib.import_module(OUT_OF_PROCESS_BACKENDS[name]).relax_out_of_process


def build_once(calculator: CalculatorConfig | BuiltCalculator) -> CalculatorConfig | BuiltCalculator:
    """Build an in-process calculator (unless it already is); GPAW / VASP / QE configs pass through."""
    if isinstance(calculator, BuiltCalculator) or calculator.name in OUT_OF_PROCESS:
        return calculator
    return build_calculator(calculator)


def build_calculator(config: CalculatorConfig) -> BuiltCalculator:
    """Instantiate an in-process calculator; GPAW/VASP/QE go through their own runners."""
    if config.name in OUT_OF_PROCESS:
        raise CalculatorUnavailable(
            f"{config.name!r} is not an in-process calculator: use dft.relax.relax_structure "
            f"(gpaw runs in a subprocess) or dft.cluster (vasp, espresso)"
        )
    try:
        factory = _FACTORIES[config.name]
    except KeyError:
        raise CalculatorUnavailable(
            f"unknown calculator {config.name!r}; known: {available_calculators()}"
        ) from None
    return factory(config)
