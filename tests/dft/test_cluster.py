"""VASP / Quantum ESPRESSO are not installed here: show the inputs quacc would run, and fail clearly."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from dft.calculators import CalculatorUnavailable
from dft.cluster import DftCodeConfig, cluster_inputs, cluster_relax
from dft.relax import RelaxConfig


@pytest.fixture
def si() -> Structure:
    return Structure(Lattice.from_parameters(3.84, 3.84, 3.84, 60, 60, 60), ["Si", "Si"],
                     [[0, 0, 0], [0.25, 0.25, 0.25]])


def incar_value(text: str, key: str) -> str:
    return next(line.split("=", 1)[1].strip() for line in text.splitlines() if line.split("=")[0].strip() == key)


def test_vasp_inputs_are_a_cell_relaxation(si, tmp_path):
    files = cluster_inputs(si, DftCodeConfig("vasp"), tmp_path, RelaxConfig(fmax=0.03, max_steps=150))
    assert {"INCAR", "KPOINTS", "POSCAR"} <= set(files)
    incar = files["INCAR"]
    assert incar_value(incar, "ISIF") == "3" and incar_value(incar, "IBRION") == "2"
    assert incar_value(incar, "NSW") == "150"
    assert float(incar_value(incar, "EDIFFG")) == pytest.approx(-0.03)
    assert float(incar_value(incar, "ENCUT")) == 520  # quacc's DefaultSetGGA (MP-compatible) cutoff
    assert "Si" in files["POSCAR"]


def test_espresso_pw_input(si, tmp_path):
    files = cluster_inputs(si, DftCodeConfig("espresso", kpts=(4, 4, 4)), tmp_path, RelaxConfig(relax_cell=False))
    (name, text), = files.items()
    assert "calculation" in text and "'relax'" in text
    assert "ATOMIC_SPECIES" in text and "Si" in text and "K_POINTS" in text
    assert "ecutwfc" in text  # from the SSSP efficiency preset


@pytest.mark.parametrize("code, exe", [("vasp", "vasp_std"), ("espresso", "pw.x")])
def test_missing_executable_is_a_clear_error(si, code, exe, tmp_path):
    with pytest.raises(CalculatorUnavailable, match=f"executable '{exe}' not found"):
        cluster_relax(si, DftCodeConfig(code), results_dir=tmp_path)
    with pytest.raises(CalculatorUnavailable, match="not found"):
        cluster_relax(si, DftCodeConfig(code, command="/nonexistent/bin/" + exe), results_dir=tmp_path)


def test_batch_records_missing_vasp_per_structure(si, tmp_path):
    from dft.batch import read_relaxed, relax_table
    from dft.calculators import CalculatorConfig
    from unimat_core.structure_table import records_to_frame

    frame = records_to_frame([si, si.copy()], ["a", "b"], source="test")
    summary = relax_table(frame, tmp_path, calculator=CalculatorConfig("vasp"))
    assert summary.n_failed == 2
    out = read_relaxed(tmp_path)
    assert out["error"].str.contains("CalculatorUnavailable: vasp: executable 'vasp_std' not found").all()
