"""`childguard report ...`: transparency statistics and CyberTipline exports from the store.

Both read ids, hashes and decisions only. `report cybertip` prepares a file for a trained human
to check and file; childguard never contacts NCMEC or anyone else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.errors import UserError

app = typer.Typer(help="Transparency reports and CyberTipline exports (nothing is sent).",
                  no_args_is_help=True)


def _parse_time(value: str, flag: str) -> datetime:
    try:
        d = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UserError(f"{flag} {value!r} is not an ISO date or date-time "
                        "(e.g. 2026-01-01 or 2026-01-01T12:00:00Z)") from exc
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _store(settings: Any) -> Any:
    from childguard.store.store import Store

    return Store.from_settings(settings)


@app.command("transparency")
def transparency_cmd(
    ctx: typer.Context,
    start: str = typer.Option(..., "--from", help="start (inclusive), ISO date/time, UTC"),
    end: str = typer.Option(..., "--to", help="end (exclusive), ISO date/time, UTC"),
    fmt: str = typer.Option("md", "--format", help="csv, json or md"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write to a file"),
) -> None:
    """Items classified, decisions by category and action, automation share, review SLA,
    overturn rate."""
    from childguard.evaluation.reports import format_transparency, transparency

    if fmt not in ("csv", "json", "md"):
        raise UserError(f"--format {fmt!r} is not supported; use csv, json or md")
    settings = get_settings(ctx)
    store = _store(settings)
    try:
        rep = transparency(store, _parse_time(start, "--from"), _parse_time(end, "--to"))
    finally:
        store.close()
    text = format_transparency(rep, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"written to {output}")
    else:
        typer.echo(text, nl=False)


@app.command("review-quality")
def review_quality_cmd(
    ctx: typer.Context,
    since: str | None = typer.Option(None, "--since",
                                     help="only decisions from this ISO date/time, UTC"),
    fmt: str = typer.Option("md", "--format", help="json or md"),
    plots: Path | None = typer.Option(None, "--plots", help="also write the PNG plots here"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write to a file"),
) -> None:
    """Where the model and the reviewers disagree: overturn rate per category and severity,
    model-vs-reviewer confusion, reviewer agreement, SLA attainment (each `reviewed` snapshot
    logs the same to MLflow)."""
    from childguard.evaluation.review_quality import format_review_quality, review_quality
    from childguard.evaluation.review_quality import plots as draw
    from childguard.policy import load_policy, resolve_policy_path

    if fmt not in ("json", "md"):
        raise UserError(f"--format {fmt!r} is not supported; use json or md")
    settings = get_settings(ctx)
    policy = load_policy(resolve_policy_path(settings.policy, settings.policies_dir))
    store = _store(settings)
    try:
        rep = review_quality(store, policy, settings.review,
                             since=_parse_time(since, "--since") if since else None)
    finally:
        store.close()
    text = (json.dumps(rep, indent=2, sort_keys=True) + "\n" if fmt == "json"
            else format_review_quality(rep))
    if plots is not None:
        for p in draw(rep, plots):
            typer.echo(f"plot {p}", err=True)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"written to {output}")
    else:
        typer.echo(text, nl=False)


@app.command("cybertip")
def cybertip_cmd(
    ctx: typer.Context,
    item_id: str = typer.Argument(..., help="the item id"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write JSON to a file"),
) -> None:
    """Structured export of the fields a CyberTipline report needs, for a human to file."""
    from childguard.evaluation.reports import cybertip

    settings = get_settings(ctx)
    store = _store(settings)
    try:
        data = cybertip(store, item_id)
    finally:
        store.close()
    text = json.dumps(data, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"written to {output} (nothing was sent)")
    else:
        typer.echo(text)
