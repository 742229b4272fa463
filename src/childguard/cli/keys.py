"""`childguard keys create|list|revoke`: the admin's API-key commands.

The secret is printed once, at creation; only its salted hash is stored, so a lost key is
revoked and replaced, never recovered.
"""

from __future__ import annotations

import json

import typer

from childguard.cli.main import get_settings
from childguard.errors import NotFound, UserError

app = typer.Typer(help="Create, list and revoke API keys (roles: service, reviewer, "
                  "policy_author, admin).", no_args_is_help=True)


def _store(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from childguard.store import Store

    return Store.from_settings(get_settings(ctx))


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="who or what uses the key, e.g. 'chat-service'"),
    role: str = typer.Option(..., "--role", help="service | reviewer | policy_author | admin"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Create a key and print its secret (shown once)."""
    from childguard.store.roles import Role

    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    store = _store(ctx)
    try:
        key_id, secret = store.create_key(name, parsed, actor="cli")
        info = store.get_key(key_id)
    finally:
        store.close()
    assert info is not None
    if json_out:
        typer.echo(json.dumps({**info.to_json(), "secret": secret}))
    else:
        typer.echo(f"created key {key_id} ({info.name}, role {info.role.value})")
        typer.echo(f"secret (shown once, store it now): {secret}")


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    active: bool = typer.Option(False, "--active", help="hide revoked keys"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List keys (never their secrets)."""
    store = _store(ctx)
    try:
        keys = store.list_keys(include_revoked=not active)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps([k.to_json() for k in keys]))
        return
    if not keys:
        typer.echo("no keys; create one with: childguard keys create NAME --role admin")
        return
    typer.echo(f"{'KEY ID':<18} {'ROLE':<14} {'STATE':<8} {'LAST USED':<20} NAME")
    for k in keys:
        last = k.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if k.last_used_at else "never"
        state = "active" if k.active else "revoked"
        typer.echo(f"{k.key_id:<18} {k.role.value:<14} {state:<8} {last:<20} {k.name}")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="key id (or its cg_<id> prefix) from 'keys list'"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Revoke a key: it stops working at once."""
    store = _store(ctx)
    try:
        done = store.revoke_key(key_id, actor="cli")
        info = store.get_key(key_id)
    finally:
        store.close()
    if info is None:
        raise NotFound(f"no key with id {key_id!r}; see 'childguard keys list'")
    if json_out:
        typer.echo(json.dumps({**info.to_json(), "changed": done}))
    else:
        typer.echo(f"key {info.key_id} revoked" if done else
                   f"key {info.key_id} was already revoked")
