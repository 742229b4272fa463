"""API keys in the store: create (the secret is shown once and never stored), check, revoke,
list. Every change is an audit event in the same transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from childguard.errors import UserError
from childguard.store import audit as audit_log
from childguard.store import keys as keymod
from childguard.store.core import StoreCore
from childguard.store.keys import ApiKeyInfo
from childguard.store.models import (
    ApiKeyRow,
    utc,
    utc_opt,
    utcnow,
)
from childguard.store.roles import Role

log = logging.getLogger(__name__)

#: how often `last_used_at` of a key is written (a write per request would serialise SQLite)
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)


class KeyCheck:
    """The outcome of checking a presented key: `info` is set only when `reason == 'ok'`."""

    reason: str  # ok | malformed | unknown | revoked
    info: ApiKeyInfo | None = None
    prefix: str | None = None
    revoked_at: datetime | None = None


def _key_info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=row.id, name=row.name, role=Role(row.role), prefix=row.prefix,
                      created_at=utc(row.created_at), created_by=row.created_by,
                      revoked_at=utc_opt(row.revoked_at), last_used_at=utc_opt(row.last_used_at))


class KeyStore(StoreCore):
    """API keys: create, check, authenticate, revoke, get, list."""

    def create_key(self, name: str, role: Role | str, *, actor: str = "system") -> tuple[str, str]:
        """A new key: returns (key id, secret). The secret is not stored and cannot be shown
        again."""
        name = name.strip()
        if not name or len(name) > 128:
            raise UserError(f"key name must be 1 to 128 characters; received {len(name)}")
        try:
            role = role if isinstance(role, Role) else Role.parse(role)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        new = keymod.new_key()
        with self._tx() as s:
            self._write_lock(s)
            s.add(ApiKeyRow(id=new.key_id, name=name, role=role.value, prefix=new.prefix,
                            salt=new.salt, secret_hash=new.secret_hash, created_by=actor,
                            created_at=utcnow()))
            audit_log.append(s, actor, "key.created", new.key_id,
                             {"name": name, "role": role.value, "prefix": new.prefix})
        return new.key_id, new.secret

    def check_key(self, secret: str | None) -> KeyCheck:
        """Why a presented key is (not) accepted; records last use (at most once a minute)."""
        prefix = keymod.parse_prefix(secret or "")
        if secret is None or prefix is None:
            return KeyCheck("malformed")
        with self._sessions() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
            if row is None or not keymod.matches(row.salt, row.secret_hash, secret):
                return KeyCheck("unknown", prefix=prefix)
            info = _key_info(row)
        if info.revoked_at is not None:
            return KeyCheck("revoked", prefix=prefix, revoked_at=info.revoked_at)
        now = utcnow()
        if info.last_used_at is None or now - info.last_used_at > LAST_USED_RESOLUTION:
            try:
                with self._tx() as s:
                    s.execute(update(ApiKeyRow).where(ApiKeyRow.id == info.key_id)
                              .values(last_used_at=now))
            except OperationalError as exc:  # bookkeeping must not fail a request
                log.warning("could not record last use of key %s: %s", info.key_id,
                            type(exc).__name__)
        return KeyCheck("ok", info=info, prefix=prefix)

    def authenticate(self, secret: str) -> ApiKeyInfo | None:
        """The key's info if `secret` is a known, unrevoked key; else None."""
        return self.check_key(secret).info

    def revoke_key(self, key_id: str, *, actor: str = "system") -> bool:
        """Revoke by key id (or its `cg_<id>` prefix). False if no such active key."""
        kid = key_id.removeprefix(f"{keymod.KEY_PREFIX}_")
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(ApiKeyRow, kid, with_for_update=self._pg)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            audit_log.append(s, actor, "key.revoked", kid, {"name": row.name, "role": row.role})
            return True

    def get_key(self, key_id: str) -> ApiKeyInfo | None:
        with self._sessions() as s:
            row = s.get(ApiKeyRow, key_id.removeprefix(f"{keymod.KEY_PREFIX}_"))
            return None if row is None else _key_info(row)

    def list_keys(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        with self._sessions() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [_key_info(r) for r in s.scalars(q)]
