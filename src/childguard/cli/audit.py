"""`childguard audit verify|tail`: check the hash-chained audit log, show recent events.

`verify` exits 1 and names the first bad row when the chain is broken (a row changed, removed
or reordered), so it can run from cron or CI.
"""

from __future__ import annotations

import json

import typer

from childguard.cli.main import get_settings

app = typer.Typer(help="Verify and read the hash-chained audit log.", no_args_is_help=True)


def _store(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from childguard.store import Store

    return Store.from_settings(get_settings(ctx))


@app.command("verify")
def verify(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Recompute the chain; exit 1 with the first bad row if anything was tampered with."""
    store = _store(ctx)
    try:
        report = store.verify_audit()
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(report.to_json()))
    elif report.ok:
        typer.echo(f"audit log OK: {report.reason}; head {report.head_hash}")
    else:
        typer.echo(f"audit log BROKEN at row {report.first_bad}: {report.reason}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("tail")
def tail(
    ctx: typer.Context,
    n: int = typer.Option(20, "-n", "--lines", min=1, max=10_000, help="how many events"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """The most recent audit events, oldest first."""
    store = _store(ctx)
    try:
        events = store.audit_tail(n)
    finally:
        store.close()
    for ev in events:
        if json_out:
            typer.echo(json.dumps(ev.to_json()))
        else:
            payload = json.dumps(ev.payload, sort_keys=True)
            if len(payload) > 120:
                payload = payload[:117] + "..."
            typer.echo(f"{ev.seq:>6} {ev.ts.strftime('%Y-%m-%d %H:%M:%S')} {ev.actor:<16} "
                       f"{ev.action:<16} {ev.subject} {payload}")
