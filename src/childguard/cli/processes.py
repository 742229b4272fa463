"""The processes of a detached server's session, and ending them (Linux /proc).

Why a module of its own: `childguard serve --stop` and the test that checks it need the same
notion of "ours": every process in the session the detached server leads, which is where Ray
starts everything it runs for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session `sid` (Linux /proc; field 6 of stat). The
    detached server leads its own session, and every process Ray starts for it (GCS, raylet,
    its agents, the Serve replicas) stays in that session even when it makes its own process
    group, so this finds exactly ours and nothing else."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return sorted(found)


def end_session(sid: int, grace_s: float = 10.0) -> list[int]:
    """SIGTERM every process left in the session, SIGKILL what is still there after
    `grace_s` (Ray's DashboardAgent and RuntimeEnvAgent ignore SIGTERM). Returns the pids
    that had to be killed."""
    left = session_members(sid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = session_members(sid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left
