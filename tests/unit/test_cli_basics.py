"""The installed `childguard` command: version, policy list, error exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("childguard")
    env = {**os.environ, "CHILDGUARD_HOME": str(home)}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_version_and_policy_list_json(tmp_path: Path) -> None:
    r = _run("version", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["childguard"]
    r = _run("policy", "list", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["id"] for row in rows] == ["child_safety"] and rows[0]["valid"]


def test_user_error_exit_code_2(tmp_path: Path) -> None:
    r = _run("policy", "render", "no_such_policy", home=tmp_path)
    assert r.returncode == 2
    assert "no policy folder 'no_such_policy'" in r.stderr and "child_safety" in r.stderr


def test_bad_settings_file_exit_2(tmp_path: Path) -> None:
    r = _run("--config", str(tmp_path / "missing.toml"), "policy", "list", home=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
