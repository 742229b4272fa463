"""The audit log seen from the store: append an event in its own transaction, verify the
hash chain, read the tail (`audit.py` holds the chain itself)."""

from __future__ import annotations

from typing import Any

from childguard.store import audit as audit_log
from childguard.store.audit import AuditEvent, AuditReport
from childguard.store.core import StoreCore


class AuditStore(StoreCore):
    """Audit events outside a verdict's transaction (keys, policy promotions, reviews...)."""

    def append_audit(self, actor: str, action: str, subject: str,
                     payload: dict[str, Any]) -> None:
        with self._tx() as s:
            self._write_lock(s)
            audit_log.append(s, actor, action, subject, payload)

    def verify_audit(self) -> AuditReport:
        with self._sessions() as s, s.begin():
            return audit_log.verify(s)

    def audit_tail(self, n: int = 20) -> list[AuditEvent]:
        with self._sessions() as s:
            return audit_log.tail(s, n)
