"""VASP and Quantum ESPRESSO through quacc's recipes, for clusters where the codes are installed.

`cluster_inputs` writes the input files the quacc calculators would run (INCAR/KPOINTS/POSCAR for
VASP: POTCARs need a licensed `VASP_PP_PATH`; `espresso.pwi` for pw.x), so a campaign can be checked
on a laptop. `cluster_relax` checks the executable first and raises `CalculatorUnavailable`
naming it, then calls quacc's `relax_job` (positions + cell). Settings go through quacc's
scoped `change_settings`, never a process-global switch. Convergence and step limit come from the
one `dft.relax.RelaxConfig` every backend takes; `DftCodeConfig` holds only what is the code's own.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from ase.io import write
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from dft.calculators import CalculatorConfig, CalculatorUnavailable
from dft.errors import short_error
from dft.relax import RelaxConfig, RelaxResult, record_outcome

DEFAULT_PRESETS = {"vasp": "DefaultSetGGA", "espresso": "sssp_1.3.0_pbe_efficiency"}
DEFAULT_COMMANDS = {"vasp": "vasp_std", "espresso": "pw.x"}


@dataclass(frozen=True)
class DftCodeConfig:
    """One DFT code run by quacc on a cluster (VASP or Quantum ESPRESSO): preset, executable, extra parameters.

    Not to be confused with deployments.cluster.ClusterConfig (where Dask runs the tasks)."""

    code: Literal["vasp", "espresso"] = "vasp"
    preset: str | None = None  # quacc's preset name; None -> DEFAULT_PRESETS[code]
    command: str | None = None  # executable; None -> DEFAULT_COMMANDS[code]
    kpts: tuple[int, int, int] | None = None  # espresso only; VASP presets choose k-points
    parameters: dict = field(default_factory=dict)

    @property
    def executable(self) -> str:
        return self.command or DEFAULT_COMMANDS[self.code]

    @property
    def preset_name(self) -> str:
        return self.preset or DEFAULT_PRESETS[self.code]


def _vasp_parameters(config: DftCodeConfig, relax: RelaxConfig) -> dict:
    return {"nsw": relax.max_steps, "isif": 3 if relax.relax_cell else 2, "ibrion": 2,
            "ediffg": -abs(relax.fmax), **config.parameters}


def _espresso_parameters(config: DftCodeConfig, relax: RelaxConfig) -> dict:
    control = {"calculation": "vc-relax" if relax.relax_cell else "relax", "nstep": relax.max_steps,
               "forc_conv_thr": relax.fmax / 25.711}  # eV/A -> Ry/bohr
    input_data = {"control": control, **config.parameters.get("input_data", {})}
    extra = {k: v for k, v in config.parameters.items() if k != "input_data"}
    return {"input_data": input_data, **({"kpts": config.kpts} if config.kpts else {}), **extra}


def cluster_inputs(structure: Structure, config: DftCodeConfig, directory: str | Path,
                   relax: RelaxConfig = RelaxConfig()) -> dict[str, str]:
    """Write the input files the code would run into `directory`; returns {file name: text}."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if config.code == "vasp":
        from quacc.calculators.vasp import Vasp

        calc = Vasp(atoms, preset=config.preset_name, use_custodian=False, **_vasp_parameters(config, relax))
        try:  # sets spin and sorting; its last step looks up POTCARs, absent without VASP_PP_PATH
            calc.initialize(atoms)
        except RuntimeError as exc:
            if "pseudopotential" not in str(exc).lower() and "POTCAR" not in str(exc):
                raise
        calc.write_incar(atoms, directory=str(out))
        calc.write_kpoints(atoms, directory=str(out))
        write(out / "POSCAR", atoms, format="vasp", direct=True, sort=True)
    elif config.code == "espresso":
        from quacc.calculators.espresso.espresso import Espresso

        calc = Espresso(input_atoms=atoms, preset=config.preset_name, **_espresso_parameters(config, relax))
        calc.directory = out
        calc.write_inputfiles(atoms, ["energy", "forces", "stress"])
    else:
        raise ValueError(f"unknown cluster code {config.code!r}; use 'vasp' or 'espresso'")
    return {p.name: p.read_text() for p in sorted(out.iterdir()) if p.is_file()}


def check_executable(config: DftCodeConfig) -> str:
    path = shutil.which(config.executable)
    if path is None:
        raise CalculatorUnavailable(
            f"{config.code}: executable {config.executable!r} not found on PATH. VASP and Quantum ESPRESSO "
            f"are not installed here; run this on a cluster with the code loaded (e.g. `module load "
            f"{config.code}`), or set DftCodeConfig.command. Inspect the inputs with dft.cluster.cluster_inputs."
        )
    return path


def cluster_relax(structure: Structure, config: DftCodeConfig, relax: RelaxConfig = RelaxConfig(), *,
                  results_dir: str | Path | None = None) -> dict:
    """Relax with quacc's VASP/QE `relax_job`; returns quacc's output document (a dict)."""
    executable = check_executable(config)
    from quacc import change_settings

    atoms = AseAtomsAdaptor.get_atoms(structure)
    results = Path(results_dir) if results_dir else Path(tempfile.mkdtemp(prefix=f"unimat-{config.code}-"))
    if config.code == "vasp":
        from quacc.recipes.vasp.core import relax_job

        settings = {"RESULTS_DIR": results, "VASP_CMD": executable}
        with change_settings(settings):
            return relax_job(atoms, preset=config.preset_name, relax_cell=relax.relax_cell,
                             **_vasp_parameters(config, relax))
    from quacc.recipes.espresso.core import relax_job

    settings = {"RESULTS_DIR": results, "ESPRESSO_BIN_DIR": Path(executable).parent}
    with change_settings(settings):
        return relax_job(atoms, preset=config.preset_name, relax_cell=relax.relax_cell,
                         **_espresso_parameters(config, relax))


def relax_out_of_process(structure: Structure, calculator: CalculatorConfig, relax: RelaxConfig) -> RelaxResult:
    """`cluster_relax` as a `RelaxResult` (the out-of-process backend interface of dft.calculators): a missing
    executable or a failed run becomes `error`.

    Mapping of quacc's output (final `atoms`, `results["energy"]`) is not exercised on this
    machine (no VASP/QE here).
    """
    config = DftCodeConfig(code=calculator.name, **calculator.options)
    start = time.perf_counter()
    result = RelaxResult(structure=structure, calculator=config.code, calculator_version=config.preset_name)
    try:
        doc = cluster_relax(structure, config, relax)
        final = doc["atoms"]
        forces = np.asarray(doc["results"].get("forces", np.full((len(final), 3), np.nan)))
        steps = int(doc.get("nsteps", doc.get("parameters", {}).get("nsw", 0)) or 0)
        record_outcome(result, structure, AseAtomsAdaptor.get_structure(final.copy()), float(doc["results"]["energy"]),
                       float(np.linalg.norm(forces, axis=1).max()), steps, False, relax)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        result.error = short_error(exc)
    result.wall_time_s = time.perf_counter() - start
    return result
