"""Every `childguard ...` command line that README, docs/ and the scripts print names a
command that exists and only options that command has.

Why: README promised `childguard keys create NAME ROLE` long after the option became `--role`,
and a newcomer's first command failed. The lines are synopses (`[--detach | --stop]`,
`create|list|revoke`, placeholders such as RUN_ID or "$V2[test]"), so each is checked for what
a synopsis fixes: the command path (each `a|b` alternative) and every `--option` on it; the
values are the reader's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from childguard.cli.main import app

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
           REPO / "scripts" / "run_stack.sh", *sorted((REPO / "src/childguard/cli").glob("*.py"))]
ROOT = get_command(app)
_INLINE = re.compile(r"`(childguard [^`\n]+)`")
_LINE = re.compile(r"^\s*(?:\"\$CG\"|childguard)\s+(.*)$")


def _command_lines() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(REPO))
        for m in _INLINE.finditer(text):
            found.append((where, m.group(1)))
        for raw in text.splitlines():
            m = _LINE.match(raw)
            if m:
                found.append((where, "childguard " + m.group(1)))
        # strings the CLI and scripts print: "... childguard keys create NAME --role admin"
        for m in re.finditer(r"[:;] (childguard (?:[a-z-]+ ){1,2}[^\"'`)\n]*)", text):
            if m.group(1).split()[1] in ROOT.commands:  # prose ("childguard never ...") is not
                found.append((where, m.group(1)))
    out = []
    for where, line in found:
        line = line.split(" # ")[0].split("   ")[0].rstrip("\\ ").strip()
        if line.startswith("childguard is ") or line == "childguard":
            continue
        out.append((where, line))
    return sorted(set(out))


LINES = _command_lines()


def _tokens(line: str) -> list[str]:
    line = re.sub(r"[\[\]]", " ", line)  # optional groups: their contents still count
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return line.split()


def _resolve(tokens: list[str]) -> tuple[list[str], Any, list[str]]:
    """(command path, command, the rest): follows subcommand names (the first of `a|b`)."""
    cmd: Any = ROOT
    path: list[str] = []
    rest = tokens[1:]
    while rest and getattr(cmd, "commands", None):
        names = rest[0].split("|")
        if not all(n in cmd.commands for n in names):
            break
        path.append(rest[0])
        cmd = cmd.commands[names[0]]
        rest = rest[1:]
    return path, cmd, rest


def _option_names(cmd: Any) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        names.update(getattr(p, "opts", ()))
        names.update(getattr(p, "secondary_opts", ()))
    return names


def test_lines_are_found() -> None:
    assert len(LINES) > 40
    assert any("keys create" in line for _, line in LINES)


@pytest.mark.parametrize(("where", "line"), LINES, ids=[f"{w}: {line[:60]}" for w, line in LINES])
def test_documented_command_exists_with_its_options(where: str, line: str) -> None:
    tokens = _tokens(line)
    path, cmd, rest = _resolve(tokens)
    assert path, f"{where}: {line!r} names no childguard command"
    assert not getattr(cmd, "commands", None) or not rest or rest[0].startswith("-") \
        or rest[0] == "...", (
        f"{where}: {line!r}: {' '.join(path)} has no subcommand {rest[0]!r}")
    for alt in path[-1].split("|")[1:]:  # every alternative of the last name exists too
        parent = ROOT
        for name in path[:-1]:
            parent = parent.commands[name.split("|")[0]]
        assert alt in parent.commands, f"{where}: {line!r}: no command {alt!r}"
    known = _option_names(cmd) | _option_names(ROOT)
    for tok in rest:
        for opt in tok.split("|"):
            opt = opt.split("=", 1)[0]
            if re.fullmatch(r"--[a-z][a-z0-9-]*|-[a-zA-Z]", opt):
                assert opt in known, (f"{where}: {line!r}: `childguard {' '.join(path)}` has "
                                      f"no option {opt}; it has {sorted(known)}")
    # a required option must be on the line (`keys create NAME ROLE` lacked --role)
    if len(path[-1].split("|")) == 1 and "..." not in rest:
        for p in cmd.params:
            opts = getattr(p, "opts", ())
            if getattr(p, "required", False) and any(o.startswith("--") for o in opts):
                assert any(o in tokens for o in opts), (
                    f"{where}: {line!r}: `childguard {' '.join(path)}` needs {opts[0]}")
