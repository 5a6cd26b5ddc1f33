"""FIRE and BFGS steps against ASE's own optimisers on the same EMT energy surface, step by step."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS, FIRE

from dft.optimizers import Bfgs, Fire, make_stepper


@pytest.mark.parametrize(("ours", "theirs"), [(Fire, FIRE), (Bfgs, BFGS)])
def test_steps_follow_ase_positions_only(ours, theirs):
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True).repeat(2)
    atoms.rattle(0.08, seed=3)
    atoms.calc = EMT()
    mine = atoms.copy()
    mine.calc = EMT()
    stepper = ours()
    trajectory = []
    with theirs(atoms, logfile=None) as opt:
        for _ in opt.irun(fmax=1e-4, steps=25):
            trajectory.append(atoms.positions.copy())
    for expected in trajectory[1:]:
        mine.positions = stepper.step(mine.positions.copy(), mine.get_forces())
        assert np.allclose(mine.positions, expected, atol=1e-10)
    assert len(trajectory) == 26  # 25 steps were compared


def test_unknown_optimizer_is_a_clear_error():
    assert isinstance(make_stepper("FIRE"), Fire) and isinstance(make_stepper("BFGS"), Bfgs)
    with pytest.raises(ValueError, match="LBFGS"):
        make_stepper("LBFGS")
