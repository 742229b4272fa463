"""`childguard review`: the human review queue in Label Studio.

- `init`: create or update the review project (labelling config from the policy, webhook with
  the shared secret, the priority view). Idempotent.
- `status [--json]`: pending, in review, done, overdue by SLA, oldest age.
- `sync`: one pass of the outbox worker (items -> tasks), the reconcile (annotations the webhook
  missed -> decisions) and the media retention purge.
- `run`: the same as a loop (outbox every few seconds, reconcile every
  `review.reconcile_interval_s`), backing off while Label Studio is down.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.errors import ChildguardError, DependencyError, UserError

app = typer.Typer(help="Human review in Label Studio: project, queue status, sync.",
                  no_args_is_help=True)


def _store(settings: Any) -> Any:
    from childguard.store import Store

    return Store.from_settings(settings)


def _bridge(settings: Any, store: Any) -> Any:
    from childguard.review_bridge.bridge import ReviewBridge

    return ReviewBridge.from_settings(settings, store)


@app.command()
def init(ctx: typer.Context,
         json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Create or update the review project and its webhook (idempotent)."""
    settings = get_settings(ctx)
    bridge = _bridge(settings, _store(settings))
    state = bridge.init_project()
    if json_out:
        typer.echo(json.dumps(state.to_json()))
        return
    verb = "created" if state.created else ("updated" if state.config_updated else "unchanged")
    typer.echo(f"review project {state.project_id} {verb} at {settings.review.label_studio_url}"
               f" (policy {bridge.policy.id}@{bridge.policy.version}); webhook "
               f"{state.webhook_id}{' (registered)' if state.webhook_changed else ''} -> "
               f"{settings.review.public_url.rstrip('/')}/v1/review/webhook")


@app.command()
def status(ctx: typer.Context,
           json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Pending, in review, done, overdue by SLA, oldest age."""
    from childguard.review_bridge.project import find_project_id
    from childguard.review_bridge.status import queue_status

    settings = get_settings(ctx)
    store = _store(settings)
    bridge = _bridge(settings, store)
    down: str | None = None
    try:
        project_id: int | None = find_project_id(bridge.client, settings.review.project_title)
    except DependencyError as exc:  # Label Studio down: still report what the store knows
        project_id, down = None, f"unavailable: {exc}"
    except UserError:  # no project yet
        project_id = None
    st = queue_status(store, bridge.client, project_id)
    if down is not None:
        st["label_studio"] = down
    if json_out:
        typer.echo(json.dumps(st))
    else:
        for key in ("pending", "retrying", "in_review", "done", "overdue", "oldest_age_s",
                    "label_studio"):
            typer.echo(f"{key:>13}: {st[key]}")
    if st["label_studio"] != "ok":
        raise typer.Exit(3)


@app.command()
def sync(ctx: typer.Context,
         json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """One pass: outbox -> tasks, missed annotations -> decisions, media retention purge."""
    settings = get_settings(ctx)
    store = _store(settings)
    bridge = _bridge(settings, store)
    if not bridge.client.health():
        raise DependencyError(f"Label Studio at {settings.review.label_studio_url} does not "
                              "answer; start it with scripts/labelstudio.sh start")
    work = bridge.worker().drain()
    rec = bridge.reconcile()
    purged = store.purge_media()
    out = {"outbox": work.to_json(), "reconcile": rec.to_json(), "media_purged": purged}
    typer.echo(json.dumps(out) if json_out else
               f"tasks created {work.created}, already there {work.existing}, failed "
               f"{work.failed}; decisions recovered {rec.recorded}; media purged {purged}")
    if work.label_studio_down:
        raise typer.Exit(3)


@app.command()
def run(ctx: typer.Context,
        interval: float = typer.Option(2.0, help="seconds between outbox passes"),
        metrics_port: int = typer.Option(0, help="serve Prometheus metrics on this port (0: off)"),
        ) -> None:
    """Run the outbox worker and the reconcile until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings(ctx)
    store = _store(settings)
    bridge = _bridge(settings, store)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=bridge.metrics.registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last_reconcile = 0.0

    def on_pass(_rep: Any) -> None:
        nonlocal last_reconcile
        if time.monotonic() - last_reconcile >= settings.review.reconcile_interval_s:
            try:
                bridge.reconcile()
                store.purge_media()
            except ChildguardError as exc:  # Label Studio down or refusing: try next time
                logging.getLogger("childguard.review").warning("reconcile: %s", exc)
            _snapshot_if_due(settings)
            last_reconcile = time.monotonic()

    worker = None
    while worker is None and not stop.is_set():
        try:
            worker = bridge.worker()
        except (DependencyError, UserError) as exc:  # down, or no project yet
            logging.getLogger("childguard.review").warning("waiting for Label Studio: %s", exc)
            stop.wait(5.0)
    if worker is not None:
        worker.run_forever(stop, interval_s=interval, on_pass=on_pass)


def _snapshot_if_due(settings: Any) -> None:
    """The periodic `eval snapshot-reviews`: when the latest version of the reviewed set is
    older than `review.snapshot_interval_hours` (0 = off). Failures are logged and retried on
    the next pass; they never stop the worker."""
    from datetime import UTC, datetime

    from childguard.evaluation.reviewed import ReviewedSets, take_snapshot

    hours = settings.review.snapshot_interval_hours
    if hours <= 0:
        return
    log = logging.getLogger("childguard.review")
    try:
        sets = ReviewedSets(settings.reviewed_dir)
        if sets.versions():
            last = datetime.fromisoformat(sets.read().created_at)
            if (datetime.now(UTC) - last).total_seconds() < hours * 3600:
                return
        snap = take_snapshot(settings)
        if snap is not None:
            log.info("reviewed set: wrote %s (%d rows, digest %s)", snap.ref, len(snap.rows),
                     snap.digest)
    except Exception as exc:  # the worker's job is the queue; a snapshot can wait
        log.warning("reviewed set: snapshot failed: %s: %s", type(exc).__name__, exc)
