"""The relaxation engine every caller uses: a list of structures in, one `RelaxResult` each out, in order.

ML potentials (CHGNet, SevenNet) go through the batched engine (`dft.batched`, one model call per
optimiser step for the whole list) unless `RelaxConfig.engine == "ase"`; EMT, GPAW, VASP and QE go
one by one through `dft.relax.relax_structure`. Callers (dft.batch, the relax and score tasks,
dft.elemental, the discovery benchmark) build their calculator once and hand it in.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymatgen.core import Structure

from dft.calculators import BuiltCalculator, CalculatorConfig, CalculatorUnavailable, build_once
from dft.potentials import AseCalculatorBatch, BatchedPotential
from dft.relax import RelaxConfig, RelaxResult, relax_structure, torch_threads


def batched_potential(calculator: CalculatorConfig | BuiltCalculator, config: RelaxConfig) -> BatchedPotential | None:
    """The potential the batched engine drives for this (built) calculator, or None for one by one."""
    if not isinstance(calculator, BuiltCalculator) or config.engine == "ase":
        if config.engine == "batched":
            raise CalculatorUnavailable(f"{calculator.name!r} runs outside this process: use engine 'auto' or 'ase'")
        return None
    if calculator.batched is not None:
        return calculator.batched
    return AseCalculatorBatch(calculator.calculator) if config.engine == "batched" else None


def relax_structures(structures: Sequence[Structure], calculator: CalculatorConfig | BuiltCalculator,
                     config: RelaxConfig = RelaxConfig()) -> list[RelaxResult]:
    """Relax every structure with one calculator; failures are results with an `error`, never exceptions."""
    from threadpoolctl import threadpool_limits

    from dft.batched import relax_batched

    if not structures:
        return []
    built = build_once(calculator)
    potential = batched_potential(built, config)
    if potential is None:
        return [relax_structure(s, built, config) for s in structures]
    assert isinstance(built, BuiltCalculator)
    # one BLAS thread for the 3x3 cell algebra (multi-threaded BLAS only contends on small matrices)
    with threadpool_limits(limits=1, user_api="blas"), torch_threads(built.cpu_threads):
        return relax_batched(structures, potential, config, calculator=built.name, version=built.version)
