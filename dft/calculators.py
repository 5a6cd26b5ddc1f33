"""Calculator registry: a typed config in, a real ASE calculator (plus its name and version) out.

In-process calculators (`chgnet`, `sevennet`, `emt`) are ASE calculators driven by quacc's
`Runner` (see `dft.relax`); the ML potentials also carry a batched view of the same model
(`BuiltCalculator.batched`, see `dft.potentials`), which `dft.engine` uses by default. `gpaw` runs in a Debian `/usr/bin/python3` subprocess (see
`dft.gpaw_runner`) because Debian's GPAW extension is built against numpy 1.x and cannot load
in the project venv (numpy 2.x). `vasp` and `espresso` are cluster codes driven by quacc's
recipes (see `dft.cluster`); they are not built here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Literal

from ase.calculators.calculator import BaseCalculator

from dft.potentials import BatchedPotential, ChgnetBatch, SevennetBatch

IN_PROCESS = ("chgnet", "sevennet", "emt")
SUBPROCESS = ("gpaw",)
CLUSTER = ("vasp", "espresso")
OUT_OF_PROCESS = (*SUBPROCESS, *CLUSTER)  # never built here; dft.relax.relax_structure routes them


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
    model = CHGNet.load(model_name=config.model or "0.3.0", use_device="cpu", verbose=False)
    calc = CHGNetCalculator(model=model, use_device=resolve_device(config.device), **config.options)
    return BuiltCalculator(calc, "chgnet", f"chgnet {_version('chgnet')} model {model.version}",
                           config.cpu_threads, ChgnetBatch(calc.model))


def _sevennet(config: CalculatorConfig) -> BuiltCalculator:
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise CalculatorUnavailable("sevenn is not installed: pip install '.[mlip]'") from exc
    model = config.model or "7net-0"
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


def register_calculator(name: str, factory: Callable[[CalculatorConfig], BuiltCalculator]) -> None:
    """Add an in-process calculator (e.g. a site-specific potential) under `name`."""
    _FACTORIES[name] = factory


def available_calculators() -> list[str]:
    return sorted([*_FACTORIES, *SUBPROCESS, *CLUSTER])


def build_once(calculator: CalculatorConfig | BuiltCalculator) -> CalculatorConfig | BuiltCalculator:
    """Build an in-process calculator (unless it already is); GPAW / VASP / QE configs pass through."""
    if isinstance(calculator, BuiltCalculator) or calculator.name in OUT_OF_PROCESS:
        return calculator
    return build_calculator(calculator)


def build_calculator(config: CalculatorConfig) -> BuiltCalculator:
    """Instantiate an in-process calculator; GPAW/VASP/QE go through their own runners."""
    if config.name in SUBPROCESS or config.name in CLUSTER:
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
