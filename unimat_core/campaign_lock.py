"""One round of a campaign at a time: a lock file in the campaign folder naming the process that holds it.

Taken with O_CREAT | O_EXCL (atomic on a local or NFS v3+ file system); a lock whose process is gone (a
killed run on this host) is stale and taken over, with a message saying so. A live holder makes the second
run refuse at once with a message naming the holder, unless it was asked to wait.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from unimat_core.errors import UserInputError


class CampaignBusy(UserInputError):
    """Another process runs a round of this campaign."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def holder(path: Path) -> dict | None:
    """The live holder of the lock at `path` ({pid, host, since, what}), or None (free or stale)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None if not path.exists() else {"pid": None, "host": "?", "since": "?", "what": "unreadable lock"}
    if data.get("host") == socket.gethostname() and not _alive(int(data.get("pid", 0))):
        return None
    return data


@contextmanager
def campaign_lock(path: Path, what: str, *, wait_s: float = 0.0, log: Callable[[str], None] = print
                  ) -> Iterator[None]:
    """Hold the lock at `path` while the block runs; refuse (CampaignBusy) if a live process holds it after
    `wait_s` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "what": what}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            other = holder(path)
            if other is None:
                log(f"{path}: stale lock of a process that is gone ({path.read_text(errors='replace').strip()}); "
                    "taking it over")
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() >= deadline:
                raise CampaignBusy(f"{other.get('what', 'a round')} is running (pid {other.get('pid')} on "
                                   f"{other.get('host')}, since {other.get('since')}): two rounds of one campaign never "
                                   f"run at once; wait for it to finish (or remove {path} if that process is gone)") \
                    from None
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(me))
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass
