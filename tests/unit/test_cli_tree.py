"""Every command of the CLI answers a usage mistake with its usage line and exit 2, never a
traceback; an unexpected exception prints one line naming the log that holds the traceback.

The tree is walked from the Typer app itself, so a new command is covered without editing
this test. Commands run in process through `childguard.cli.main.main` (the same entry point
the installed script calls), with a fresh data dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from childguard.cli import main as cli_main


def _leaves(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    from typer.main import get_command

    cmd = get_command(group) if isinstance(group, typer.Typer) else group
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [(path, cmd)]
    out = []
    for name, sub in sorted(subs.items()):
        out.extend(_leaves(sub, (*path, name)))
    return out


LEAVES = _leaves(cli_main.app)


def _required(cmd: Any) -> bool:
    return any(getattr(p, "required", False) for p in cmd.params)


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    rc = cli_main.main(args)
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "home"))


def test_the_tree_is_walked() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"keys create", "report transparency", "hashes match", "policy render",
            "eval run", "version"} <= names
    assert len(LEAVES) > 30


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_a_bogus_option_gives_usage_and_exit_2(path: tuple[str, ...],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, [*path, "--no-such-option-x"])
    assert rc == 2, out
    assert "Usage: childguard " + " ".join(path) in out
    assert "No such option" in out and "Traceback" not in out


@pytest.mark.parametrize("path", [p for p, c in LEAVES if _required(c)],
                         ids=[" ".join(p) for p, c in LEAVES if _required(c)])
def test_a_missing_argument_gives_usage_and_exit_2(path: tuple[str, ...],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, list(path))
    assert rc == 2, out
    assert "Usage: childguard " + " ".join(path) in out
    assert "Missing" in out and "Traceback" not in out


def test_keys_create_as_make_run_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, ["keys", "create", "svc-1", "--role", "service"])
    assert rc == 0, out
    assert "cg_" in out
    rc, out = _run(capsys, ["keys", "create", "svc-2", "service"])  # the old, wrong form
    assert rc == 2 and "Missing option '--role'" in out


def test_unexpected_error_is_one_line_and_logged(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(cli_main, "app", boom)
    rc, out = _run(capsys, ["version"])
    assert rc == 1
    assert out.count("\n") == 1 and "unexpected RuntimeError" in out
    assert "Traceback" not in out and "internal detail" not in out
    log = tmp_path / "home" / "logs" / "cli.log"
    assert str(log) in out and "RuntimeError: internal detail" in log.read_text()
    rc, out = _run(capsys, ["--debug", "version"])  # --debug: the traceback on the terminal
    assert rc == 1 and "Traceback" in out and "RuntimeError: internal detail" in out
