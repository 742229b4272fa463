"""`childguard serve`: the online service on one machine (Ray Serve on a private local Ray).

Why it works this way: the first start must leave the operator with something usable, so the
command creates an admin key when the store has no active one and prints it once, with the URLs.
`--detach` runs the same foreground server as a background process of its own (its own session,
pid file and log under the data dir) so `childguard serve --stop` can end exactly that process
and nothing else on a shared machine. On a cluster use `serve deploy` with
`childguard/serving/serve_config.yaml` instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.cli.processes import end_session
from childguard.errors import DependencyError, UserError


def _pid_file(settings: Any) -> Path:
    return Path(settings.home) / "serve.pid"


def _log_file(settings: Any) -> Path:
    return Path(settings.home) / "serve.log"


def ensure_admin_key(store: Any) -> str | None:
    """Create an admin key when the store has no active one; return its secret (else None)."""
    from childguard.store.roles import Role

    if any(k.role is Role.ADMIN and k.active for k in store.list_keys()):
        return None
    _, secret = store.create_key("admin", Role.ADMIN, actor="childguard serve")
    secret_str: str = secret
    return secret_str


def _print_urls(url: str, secret: str | None) -> None:
    typer.echo(f"childguard is serving on {url}")
    typer.echo(f"  API docs:   {url}/docs   (OpenAPI: {url}/openapi.json)")
    typer.echo(f"  classify:   POST {url}/v1/classify   (batch: {url}/v1/classify/batch)")
    typer.echo(f"  health:     {url}/healthz   readiness: {url}/readyz   metrics: {url}/metrics")
    if secret:
        typer.echo("")
        typer.echo(f"  admin key (shown once, store it now): {secret}")
        typer.echo(f"  try: curl -H 'Authorization: Bearer {secret}' {url}/readyz")
    else:
        typer.echo("  an admin key exists already; more keys: "
                   "childguard keys create NAME --role service")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DependencyError(f"the server exited with code {proc.returncode} while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise DependencyError(f"the server did not answer {url}/healthz within {timeout_s:g} s")


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def _stop(settings: Any) -> None:
    pid_file = _pid_file(settings)
    if not pid_file.is_file():
        raise UserError(f"no detached server recorded ({pid_file} does not exist)")
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)  # the server shuts Serve and its Ray instance down
    except ProcessLookupError:
        # it died on its own (see serve.log); Ray's processes of its session may not have
        killed = end_session(pid)
        typer.echo(f"server {pid} was not running"
                   + (f"; ended {len(killed)} leftover Ray process(es)" if killed else ""))
        pid_file.unlink(missing_ok=True)
        return
    if not _wait_exit(pid, 60.0):
        os.killpg(pid, signal.SIGKILL)  # it leads its own session: only its processes
        _wait_exit(pid, 10.0)
    # what Ray leaves behind after its own shutdown (its agents) is still in the session
    killed = end_session(pid)
    pid_file.unlink(missing_ok=True)
    typer.echo(f"stopped server {pid}"
               + (f" and {len(killed)} leftover Ray process(es)" if killed else ""))


def app(
    ctx: typer.Context,
    detach: bool = typer.Option(False, "--detach", help="run in the background (see --stop)"),
    stop: bool = typer.Option(False, "--stop", help="stop the server started with --detach"),
    host: str | None = typer.Option(None, help="default: settings serve.host (127.0.0.1)"),
    port: int | None = typer.Option(None, help="default: settings serve.port (8000)"),
    num_cpus: int = typer.Option(2, help="CPUs the local Ray instance may use"),
    reference_models: bool = typer.Option(
        False, "--reference-models", help="demo mode: deterministic reference models, no weights"
    ),
) -> None:
    """Start the HTTP service (Ray Serve) with the embedded defaults; print URLs and a key."""
    settings = get_settings(ctx)
    if stop:
        _stop(settings)
        return
    host = host or settings.serve.host
    port = port or settings.serve.port
    url = f"http://{host}:{port}"

    from childguard.store.store import Store

    store = Store.from_settings(settings)
    secret = ensure_admin_key(store)
    store.close()

    if detach:
        pid_file = _pid_file(settings)
        if pid_file.is_file():
            raise UserError(f"a detached server may be running (pid file {pid_file}); "
                            "stop it with `childguard serve --stop`")
        root = ctx.find_root().obj or {}
        cmd = [sys.executable, "-m", "childguard.cli"]
        if root.get("config"):
            cmd += ["--config", str(root["config"])]
        cmd += ["serve", "--host", host, "--port", str(port), "--num-cpus", str(num_cpus)]
        if reference_models:
            cmd.append("--reference-models")
        log_path = _log_file(settings)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_fh:
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pid_file.write_text(str(proc.pid))
        try:
            _wait_ready(url, proc, timeout_s=300)
        except DependencyError:
            pid_file.unlink(missing_ok=True)
            raise
        _print_urls(url, secret)
        typer.echo(f"  running in the background (pid {proc.pid}, log {log_path}); "
                   "stop: childguard serve --stop")
        return

    from childguard.serving.app import AppArgs, start_local, stop_local

    args = AppArgs(models="reference" if reference_models else "real")
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        start_local(settings, args, num_cpus=num_cpus, host=host, port=port,
                    log_to_driver=True)
        _print_urls(url, secret)
        typer.echo("  press Ctrl-C to stop")
        while not stopping.wait(1.0):
            pass
    finally:
        typer.echo("stopping ...")
        stop_local()
