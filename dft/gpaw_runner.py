"""Real DFT (PBE, plane waves) with Debian's GPAW, run in a `/usr/bin/python3` subprocess.

Why a subprocess: Debian's `python3-gpaw` C extension is built against Debian's numpy 1.x and
cannot be imported by the venv's numpy 2.x; a pip build of GPAW needs MPI headers or a patched
build config. Debian's `gpaw` + `gpaw-data` (system-packages.txt) install in seconds on a clean
machine. The subprocess also gives a hard per-structure time limit: it is killed on timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ase import Atoms
from ase.io import write
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.core import Structure

from dft.calculators import CalculatorConfig, CalculatorUnavailable
from dft.errors import short_error
from dft.relax import RelaxConfig, RelaxResult, record_outcome

WORKER = Path(__file__).with_name("_gpaw_worker.py")


@dataclass(frozen=True)
class GpawConfig:
    """PBE plane-wave settings; defaults are light (verification, not production convergence)."""

    xc: str = "PBE"
    ecut: float = 300.0  # eV
    kpts_density: float = 2.0  # k-points per reciprocal A^-1
    smearing: float = 0.1  # eV, Fermi-Dirac
    python: str = "/usr/bin/python3"
    setup_path: str = "/usr/share/gpaw-setups"

    @classmethod
    def from_options(cls, options: dict) -> GpawConfig:
        return cls(**options)


def check_gpaw(config: GpawConfig = GpawConfig()) -> str:
    """GPAW's version in the system Python, or CalculatorUnavailable saying what to install."""
    if not shutil.which(config.python) and not Path(config.python).exists():
        raise CalculatorUnavailable(f"{config.python} not found; GPAW runs in Debian's system Python")
    probe = subprocess.run([config.python, "-c", "import gpaw; print(gpaw.__version__)"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise CalculatorUnavailable(
            "GPAW is not importable by " + config.python + ": install the Debian packages `gpaw gpaw-data` "
            "(listed in system-packages.txt, installed by `make setup`)\n" + probe.stderr[-500:])
    if not Path(config.setup_path).is_dir():
        raise CalculatorUnavailable(f"GPAW PAW setups missing at {config.setup_path}: apt-get install gpaw-data")
    return "gpaw " + probe.stdout.strip()


def relax_gpaw(structure: Structure, gpaw: GpawConfig, config: RelaxConfig) -> RelaxResult:
    """Relax (or, with max_steps=0, single-point) one structure with GPAW; failures become `error`."""
    start = time.perf_counter()
    result = RelaxResult(structure=structure, calculator="gpaw", calculator_version="gpaw (Debian)")
    try:
        result.calculator_version = check_gpaw(gpaw)
        with tempfile.TemporaryDirectory(prefix="unimat-gpaw-") as work:
            work_path = Path(work)
            atoms: Atoms = AseAtomsAdaptor.get_atoms(structure)
            write(work_path / "in.extxyz", atoms, format="extxyz")
            request = {"atoms": str(work_path / "in.extxyz"), "txt": str(work_path / "gpaw.txt"),
                       "gpaw": asdict(gpaw), "relax": config.model_dump()}
            (work_path / "request.json").write_text(json.dumps(request))
            env = {**os.environ, "GPAW_SETUP_PATH": gpaw.setup_path, "OMP_NUM_THREADS": "1"}
            env.pop("PYTHONPATH", None)  # the venv's packages must not leak into Debian's python
            env.pop("VIRTUAL_ENV", None)
            try:
                proc = subprocess.run([gpaw.python, str(WORKER), "request.json", "result.json"], cwd=work,
                                      env=env, capture_output=True, text=True, timeout=config.time_limit_s)
            except subprocess.TimeoutExpired:
                result.error = f"time limit: GPAW process killed after {config.time_limit_s:g} s"
                return result
            if proc.returncode != 0:
                result.error = f"GPAW failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
                return result
            out = json.loads((work_path / "result.json").read_text())
        final = Atoms(numbers=out["numbers"], positions=out["positions"], cell=out["cell"], pbc=True)
        record_outcome(result, structure, AseAtomsAdaptor.get_structure(final), out["energy"], out["max_force"],
                       out["steps"], False, config)
    except CalculatorUnavailable as exc:
        result.error = f"CalculatorUnavailable: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        result.error = short_error(exc)
    finally:
        result.wall_time_s = time.perf_counter() - start
    return result


def relax_out_of_process(structure: Structure, calculator: CalculatorConfig, config: RelaxConfig) -> RelaxResult:
    """The out-of-process backend interface of dft.calculators: GPAW with the calculator's options."""
    return relax_gpaw(structure, GpawConfig.from_options(calculator.options), config)
