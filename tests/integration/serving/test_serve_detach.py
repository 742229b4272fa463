"""`childguard serve --detach` then `--stop` leaves no process behind.

The detached server leads its own session; Ray starts its GCS, raylet, agents and Serve
replicas inside it, and two of them (DashboardAgent, RuntimeEnvAgent) outlived Ray's own
shutdown and ignored SIGTERM. The test starts the real service (reference models, so no
weights are needed), stops it, and looks at every process of that session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from childguard.cli.processes import session_members
from ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _cg(home: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("childguard")
    env = {**os.environ, "CHILDGUARD_HOME": str(home)}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_stop_leaves_no_process_of_the_server_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    started = _cg(home, "serve", "--detach", "--reference-models", "--port", str(port),
                  "--num-cpus", "2")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((home / "serve.pid").read_text())
    members = session_members(pid)
    assert pid in members and len(members) > 3  # the server, GCS, raylet, replicas, ...
    stopped = _cg(home, "serve", "--stop", timeout=180)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"stopped server {pid}" in stopped.stdout
    assert session_members(pid) == [], "processes of the server's session are still running"
    assert not (home / "serve.pid").exists()
