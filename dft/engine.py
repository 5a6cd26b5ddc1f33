"""The relaxation engine every caller uses: a list of structures in, one `RelaxResult` each out, in order.

ML potentials (CHGNet, SevenNet) go through the batched engine (`dft.batched`, one model call per
optimiser step for the whole list) unless `RelaxConfig.engine == "ase"`; EMT, GPAW, VASP and QE go
one by one through `dft.relax.relax_structure`. Callers (dft.batch, the relax and score tasks,
dft.elemental, the discovery benchmark) build their calculator once and hand it in.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymatgen.core import Structure

from dft.calculators import BuiltCalculator, CalculatorConfig, CalculatorUnavailable, build_calculator
from dft.potentials import AseCalculatorBatch, BatchedPotential
from dft.relax import RelaxConfig, RelaxResult, relax_structure, torch_threads

OUT_OF_PROCESS = ("gpaw", "vasp", "espresso")  # never built in this process; relax_structure routes them


def batched_potential(calculator: CalculatorConfig | BuiltCalculator, config: RelaxConfig
                      ) -> tuple[BuiltCalculator, BatchedPotential] | None:
    """The built calculator and its batched potential when `config.engine` sends this calculator batched."""
    name = calculator.name
    if config.engine == "ase" or name in OUT_OF_PROCESS:
        if config.engine == "batched":
            raise CalculatorUnavailable(f"{name!r} runs outside this process: use engine 'auto' or 'ase'")
        return None
    built = calculator if isinstance(calculator, BuiltCalculator) else build_calculator(calculator)
    if built.batched is not None:
        return built, built.batched
    return (built, AseCalculatorBatch(built.calculator)) if config.engine == "batched" else None


def relax_structures(structures: Sequence[Structure], calculator: CalculatorConfig | BuiltCalculator,
                     config: RelaxConfig = RelaxConfig()) -> list[RelaxResult]:
    """Relax every structure with one calculator; failures are results with an `error`, never exceptions."""
    from threadpoolctl import threadpool_limits

    from dft.batched import relax_batched

    if not structures:
        return []
    route = batched_potential(calculator, config)
    if route is None:
        built = calculator if isinstance(calculator, BuiltCalculator) or calculator.name in OUT_OF_PROCESS \
            else build_calculator(calculator)
        return [relax_structure(s, built, config) for s in structures]
    built, potential = route
    # one BLAS thread for the 3x3 cell algebra (multi-threaded BLAS only contends on small matrices)
    with threadpool_limits(limits=1, user_api="blas"), torch_threads(built.cpu_threads):
        return relax_batched(structures, potential, config, calculator=built.name, version=built.version)
