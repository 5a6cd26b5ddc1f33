"""Round numbers, seeds, the target policy and the campaign lock: hand-checkable cases, no Prefect."""

import json
import os
import subprocess
import sys

import pytest

from unimat_core.campaign_lock import CampaignBusy, campaign_lock
from unimat_core.errors import UserInputError
from unimat_core.rounds import TargetPolicy, parse_round, plan_round, resolve_round, round_seed, substitutions
from unimat_core.run_layout import RunLayout


def test_round_numbers_and_seeds():
    assert parse_round("next") == "next" and parse_round(" 3 ") == "3"
    for bad in ("0", "last", "-1", "10000"):
        with pytest.raises(ValueError, match="not a round"):
            parse_round(bad)
    assert resolve_round("next", []) == 1 and resolve_round("next", [1, 2]) == 3 and resolve_round("2", [1, 2]) == 2
    with pytest.raises(UserInputError, match="rounds up to 2; start the next one with --round next"):
        resolve_round("5", [1, 2])
    assert round_seed(0, 1) == round_seed(0, 1) and len({round_seed(0, n) for n in range(1, 50)}) == 49
    assert round_seed(1, 1) != round_seed(0, 1)


def test_round_folders_hold_only_the_round_stages(tmp_path):
    layout = RunLayout(tmp_path, "c", 2)
    assert layout.generated == tmp_path / "c" / "round-0002" / "generate"
    assert layout.scores.parent == tmp_path / "c" / "round-0002" / "score"
    assert layout.train_checkpoint.parent.parent == tmp_path / "c" / "train"  # shared by every round
    assert layout.structures.parent == tmp_path / "c" / "fetch"
    assert layout.discoveries == tmp_path / "c" / "discoveries.parquet"
    assert RunLayout(tmp_path, "c").generated == tmp_path / "c" / "generate"  # no round: the single-run layout
    (tmp_path / "c" / "round-0001").mkdir(parents=True)
    (tmp_path / "c" / "round-0003").mkdir()
    assert layout.rounds() == [1, 3]


def test_target_policy_splits_a_round_and_moves_empty_shares():
    fits = lambda formula: None if "Xe" not in formula else "Xe is not on the grid"  # noqa: E731
    policy = TargetPolicy(samples=8, targets=("SrTiO3", "Ba-Ti-O"), explore=0.25, exploit=0.25)
    first = plan_round(policy, 1, 7, finds=[], known_formulas=["Ba1Ti1O3", "Ba2Ti2O6", "Sr1O1"], fits=fits)
    assert first.shares == {"user": 6, "explore": 2, "exploit": 0}  # no finds yet: exploitation goes to the user
    assert sorted(set(t for t in first.targets if t)) == ["Ba1Ti1O3", "Ba2Ti2O6", "SrTiO3"]
    assert first.targets[-2:] == [None, None] and first.kinds.count("explore") == 2
    second = plan_round(policy, 2, 8, finds=[("Ca1Ti1O3", 0.05), ("Sr1Ti1O3", 0.0)], known_formulas=[], fits=fits)
    assert second.shares == {"user": 4, "explore": 2, "exploit": 2}
    exploit = [t for t, k in zip(second.targets, second.kinds) if k == "exploit"]
    assert exploit == ["Sr1Ti1O3", "Ca1Ti1O3"]  # the lowest-energy find first, each find's own composition
    assert "Ba1Ti1O3" in substitutions("SrTiO3") and "Sr1Zr1O3" in substitutions("SrTiO3")
    none = plan_round(TargetPolicy(samples=4, explore=0.5, exploit=0.0), 1, 0, finds=[], known_formulas=[], fits=fits)
    assert none.shares == {"user": 0, "explore": 4, "exploit": 0}  # no user targets: the rest is exploration
    with pytest.raises(UserInputError, match="--round-targets: 'XeF2': Xe is not on the grid"):
        plan_round(TargetPolicy(targets=("XeF2",)), 1, 0, finds=[], known_formulas=[], fits=fits)


def test_campaign_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    lock = tmp_path / "c" / "_round.lock"
    with campaign_lock(lock, "round 1 of 'c'"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(CampaignBusy, match=r"round 1 of 'c' is running \(pid \d+"):
            with campaign_lock(lock, "round 2 of 'c'"):
                pass
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "x", "what": "r"}))
    messages = []
    with campaign_lock(lock, "round 2 of 'c'", log=messages.append):
        assert json.loads(lock.read_text())["what"] == "round 2 of 'c'"
    assert "stale lock" in messages[0]
