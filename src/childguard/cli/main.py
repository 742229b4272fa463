"""The one `childguard` command. Each role has its own module; this file only wires them.

Settings are read once here (the composition root) and handed to subcommands through the Typer
context (`get_settings(ctx)`). Errors are mapped to exit codes in exactly one place
(`main`): 2 for user errors, 3 for a dependency that is down, 1 for anything unexpected.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import typer

from childguard import __version__
from childguard.errors import ChildguardError, DependencyError, UserError

app = typer.Typer(
    name="childguard",
    help="Classify text and images against child-safety policies, end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: (module under childguard.cli, command group name); each module exposes `app` (a Typer)
SUBCOMMANDS: list[tuple[str, str]] = [
    ("policy", "policy"),
    ("models", "models"),
    ("hashes", "hashes"),
    ("keys", "keys"),
    ("audit", "audit"),
    ("classify", "classify"),
    ("serve", "serve"),
    ("review", "review"),
    ("eval", "eval"),
    ("report", "report"),
]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", help="TOML settings file (default: $CHILDGUARD_CONFIG)", exists=False
    ),
    debug: bool = typer.Option(
        False, "--debug", help="print the traceback of an unexpected error on the terminal "
        "(otherwise it goes to <data dir>/logs/cli.log)"),
) -> None:
    """childguard: read settings once and pass them to the subcommand."""
    # --debug is read by `main` from the arguments: it matters where no context exists yet
    ctx.obj = {"config": config}


def get_settings(ctx: typer.Context) -> Any:
    """The settings for this invocation, read once (lazily, so `--help` needs no settings)."""
    from childguard.settings import Settings

    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "settings" not in obj:
        try:
            obj["settings"] = Settings.load(obj.get("config"))
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from exc
        except ValueError as exc:  # pydantic ValidationError is a ValueError
            raise UserError(f"invalid settings: {exc}") from exc
        root.obj = obj
    return obj["settings"]


@app.command()
def version(json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Print the childguard version."""
    if json_out:
        import json

        typer.echo(json.dumps({"childguard": __version__, "python": sys.version.split()[0]}))
    else:
        typer.echo(f"childguard {__version__}")


def _register() -> None:
    for module, name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"childguard.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"childguard.cli.{module}":
                continue  # role not built yet
            raise
        sub = mod.app
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)
        else:  # a single command
            app.command(name=name)(sub)


_register()


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's exception classes: Typer >= 0.29 vendors its own click (`typer._click`), and
    a command may still raise the installed click's."""
    types: list[type[BaseException]] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(importlib.import_module(mod).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _is_usage_error(exc: BaseException) -> bool:
    return any(type(c).__name__ in ("UsageError", "BadParameter", "MissingParameter",
                                    "NoSuchOption", "BadOptionUsage", "BadArgumentUsage")
               for c in type(exc).__mro__ if isinstance(c, type))


def cli_log_path() -> Path:
    import os

    home = os.environ.get("CHILDGUARD_HOME")
    base = Path(home) if home else Path.home() / ".local" / "share" / "childguard"
    return base / "logs" / "cli.log"


def _report_unexpected(exc: BaseException, argv: list[str]) -> int:
    """One line on the terminal; the traceback in the CLI log (or the terminal with --debug)."""
    import traceback
    from datetime import UTC, datetime

    if "--debug" in argv:
        traceback.print_exception(exc)
        return 1
    path = cli_log_path()
    where = str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            # the command's name and options, not its values (they may be content or keys)
            shape = " ".join(a if a.startswith("-") or not i else "…" for i, a in
                             enumerate(argv))
            fh.write(f"--- {datetime.now(UTC).isoformat()} childguard {shape}\n")
            fh.write("".join(traceback.format_exception(exc)))
    except OSError:
        where = "(the log could not be written; run again with --debug)"
    typer.echo(f"error: unexpected {type(exc).__name__}; the traceback is in {where} "
               "(or run with --debug)", err=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map errors to exit codes, print the reason on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = app(args=args, prog_name="childguard", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except DependencyError as exc:
        typer.echo(f"error (dependency unavailable): {exc}", err=True)
        return 3
    except ChildguardError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:
        if isinstance(exc, _usage_error_types()):
            exc.show()  # type: ignore[attr-defined]  # the usage line and what was wrong
            return 2 if _is_usage_error(exc) else int(getattr(exc, "exit_code", 1))
        return _report_unexpected(exc, args)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
