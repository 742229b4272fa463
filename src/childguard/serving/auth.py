"""API-key authentication and role checks for every HTTP endpoint.

`require_role(*roles)` builds a FastAPI dependency: it reads the key from
`Authorization: Bearer <key>` or `X-API-Key: <key>`, checks it against the `Store` on
`request.app.state.store`, and lets the request through when the key's role is one of `roles`
(an `admin` key passes every check). 401 when the key is missing, malformed, unknown or
revoked (with `WWW-Authenticate: Bearer`), 403 naming the required role when it is valid but
not allowed here, 503 when no store is configured. The key's info is left on
`request.state.api_key` for handlers that want the caller's name (audit actor).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from childguard.store.keys import ApiKeyInfo
from childguard.store.roles import Role, role_allows

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_HOW = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def presented_key(request: Request) -> str | None:
    """The key the client sent, or None. A malformed Authorization header counts as none."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def require_role(*roles: Role) -> Callable[[Request], Awaitable[ApiKeyInfo]]:
    """A dependency admitting keys with one of `roles` (or admin)."""
    if not roles:
        raise ValueError("require_role needs at least one role")
    allowed = frozenset(Role(r) for r in roles)
    names = " or ".join(sorted(r.value for r in allowed | {Role.ADMIN}))

    async def check(request: Request) -> ApiKeyInfo:
        store = getattr(request.app.state, "store", None)
        if store is None:
            raise HTTPException(503, detail="authentication unavailable: no key store configured")
        secret = presented_key(request)
        if secret is None:
            raise HTTPException(401, detail=f"missing API key: {_HOW}", headers=_CHALLENGE)
        result = await run_in_threadpool(store.check_key, secret)
        if result.reason == "malformed":
            raise HTTPException(401, detail="invalid API key: expected a key of the form "
                                "cg_<16 hex>_<secret> as created by 'childguard keys create'",
                                headers=_CHALLENGE)
        if result.reason == "revoked":
            raise HTTPException(401, detail=f"API key {result.prefix} was revoked",
                                headers=_CHALLENGE)
        if result.info is None:
            raise HTTPException(401, detail=f"unknown API key {result.prefix}",
                                headers=_CHALLENGE)
        info: ApiKeyInfo = result.info
        if not role_allows(info.role, allowed):
            raise HTTPException(403, detail=f"this endpoint requires role {names}; key "
                                f"{info.prefix} ({info.name!r}) has role {info.role.value}")
        request.state.api_key = info
        return info

    check.__name__ = f"require_role_{'_'.join(sorted(r.value for r in allowed))}"
    return check
