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
) -> None:
    """childguard: read settings once and pass them to the subcommand."""
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map errors to exit codes, print the reason on stderr."""
    try:
        rc = app(args=argv, standalone_mode=False)
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
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2 if isinstance(exc, click.exceptions.UsageError) else exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
