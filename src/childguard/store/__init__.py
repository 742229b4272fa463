"""childguard.store: verdicts, review decisions, outbox, audit log, API keys, review media.

`Store` is the one entry point; tables are in `models`, the hash chain in `audit`, key hashing
in `keys`, the media area in `media`, and Alembic migrations in `migrations/`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from childguard.store.audit import AuditEvent, AuditReport
    from childguard.store.keys import ApiKeyInfo
    from childguard.store.roles import Role
    from childguard.store.store import ItemInfo, KeyCheck, OutboxItem, Store

__all__ = ["ApiKeyInfo", "AuditEvent", "AuditReport", "ItemInfo", "KeyCheck", "OutboxItem",
           "Role", "Store"]

_WHERE = {
    "Store": "childguard.store.store", "ItemInfo": "childguard.store.store",
    "OutboxItem": "childguard.store.store", "KeyCheck": "childguard.store.store",
    "AuditEvent": "childguard.store.audit", "AuditReport": "childguard.store.audit",
    "ApiKeyInfo": "childguard.store.keys", "Role": "childguard.store.roles",
}


def __getattr__(name: str) -> Any:
    # lazy: `childguard.store.db` is imported by every table owner and must not pull in the
    # whole store (and its schema imports) just to get `Base`
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'childguard.store' has no attribute {name!r}")
