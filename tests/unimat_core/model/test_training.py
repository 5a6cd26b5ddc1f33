import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unimat_core.model.checkpoint import load_checkpoint
from unimat_core.model.training import TrainConfig, train

from .conftest import overfit_config

REPO = Path(__file__).resolve().parents[3]


def test_overfit_model_reaches_low_loss(overfit_model):
    _, summary = overfit_model
    assert summary.step == 1500 and summary.stopped_by == "max_steps"
    assert summary.last_loss < 0.2
    state = load_checkpoint(summary.checkpoint)
    assert {"model", "ema", "optimizer", "step", "spec", "model_config", "diffusion_config", "version"} <= set(state)
    assert state["composition_prior"]["atom_counts"] == [0, 0, 0, 0, 0, 4]  # four 5-atom perovskites


def _steps_logged(out: Path) -> list[int]:
    with (out / "metrics.csv").open() as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(handful, tmp_path):
    _, dataset = handful
    killed = tmp_path / "killed"
    config = overfit_config(dataset, killed, max_steps=400, lr_decay_steps=400, checkpoint_every=20, log_every=10)
    script = (f"from unimat_core.model.training import TrainConfig, train; "
              f"train(TrainConfig.from_dict({config.as_dict()!r}))")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy())
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and load_checkpoint(ckpt)["step"] >= 40:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(ckpt)["step"]
    assert 40 <= saved < 400, "the run must be killed mid-way"

    resumed = train(TrainConfig.from_dict({**config.as_dict(), "max_steps": 100}))
    assert resumed.resumed_from == saved and resumed.step == 100
    steps = _steps_logged(killed)
    assert steps[-1] == 100 and saved + 10 in steps

    straight = train(overfit_config(dataset, tmp_path / "straight", max_steps=100, lr_decay_steps=400, checkpoint_every=20,
                                    log_every=10))
    a, b = load_checkpoint(resumed.checkpoint)["model"], load_checkpoint(straight.checkpoint)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_wall_clock_budget_stops_training(handful, tmp_path):
    _, dataset = handful
    summary = train(overfit_config(dataset, tmp_path, max_steps=10_000, max_minutes=0.05))
    assert summary.stopped_by == "max_minutes" and 0 < summary.step < 10_000
    assert load_checkpoint(summary.checkpoint)["step"] == summary.step


def test_config_round_trip_and_mismatched_resume(handful, tmp_path):
    _, dataset = handful
    config = overfit_config(dataset, tmp_path, max_steps=2)
    assert TrainConfig.from_dict(config.as_dict()) == config
    train(config)
    other = TrainConfig.from_dict({**config.as_dict(), "model": {**config.as_dict()["model"], "width": 16}})
    with pytest.raises(ValueError, match="another dataset layout or model config"):
        train(other)
