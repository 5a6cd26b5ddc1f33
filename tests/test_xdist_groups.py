"""`make test` relies on xdist's loadgroup to keep the server tests and each costly fixture on one worker
(tests/conftest.py); when a pytest or xdist upgrade silently breaks the grouping (pytest-xdist#1386: pytest 9.2),
servers start twice and the suite slows or fails. This checks the groups reached xdist."""

from __future__ import annotations

import pytest

from tests.conftest import xdist_group_of


def test_grouped_tests_carry_their_group_to_the_scheduler(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under `pytest -n N --dist loadgroup` (make test)")
    grouped = [(item, group) for item in request.session.items if (group := xdist_group_of(item))]
    if not grouped:
        pytest.skip("no grouped test collected in this run")
    wrong = [item.nodeid for item, group in grouped if not item.nodeid.endswith(f"@{group}")]
    assert not wrong, f"{len(wrong)} grouped tests lost their xdist group, e.g. {wrong[:3]}"
