"""Runs inside Debian's /usr/bin/python3 (numpy 1.x + python3-gpaw), never inside the venv.

Usage: python3 _gpaw_worker.py request.json result.json. The request holds an extxyz path,
GPAW parameters and the relaxation settings; the result holds energies, forces and the final
cell/positions. Only the standard library, ASE and GPAW are used here.
"""

import json
import sys
import time


def main(request_path, result_path):
    from ase.constraints import UnitCellFilter
    from ase.io import read
    from ase.optimize import BFGS, FIRE
    import gpaw
    from gpaw import GPAW, PW

    with open(request_path) as handle:
        request = json.load(handle)
    atoms = read(request["atoms"], format="extxyz")
    params = request["gpaw"]
    calc = GPAW(mode=PW(params["ecut"]), xc=params["xc"], kpts={"density": params["kpts_density"], "gamma": True},
                occupations={"name": "fermi-dirac", "width": params["smearing"]},
                txt=request.get("txt"), symmetry="off")  # relaxations may break symmetry
    atoms.calc = calc
    start = time.perf_counter()
    relax = request["relax"]
    optimizable = UnitCellFilter(atoms) if relax["relax_cell"] else atoms
    steps = 0
    if relax["max_steps"] > 0:
        optimizer = {"FIRE": FIRE, "BFGS": BFGS}[relax["optimizer"]](optimizable, logfile=None)
        optimizer.run(fmax=relax["fmax"], steps=relax["max_steps"])
        steps = optimizer.nsteps
    forces = optimizable.get_forces()
    max_force = max(sum(c * c for c in row) ** 0.5 for row in forces)
    result = {
        "energy": float(atoms.get_potential_energy()),
        "max_force": float(max_force),
        "steps": int(steps),
        "cell": atoms.cell.array.tolist(),
        "positions": atoms.positions.tolist(),
        "numbers": atoms.numbers.tolist(),
        "seconds": time.perf_counter() - start,
        "version": "gpaw " + gpaw.__version__,
    }
    with open(result_path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
