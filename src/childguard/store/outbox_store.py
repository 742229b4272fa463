"""The review outbox: durable work items for the review bridge, leased, retried with backoff
and done once. A row is written in the transaction that saved the verdict; the Label Studio
task is created later from a claimed row, so a Label Studio outage loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from childguard.errors import NotFound
from childguard.store import audit as audit_log
from childguard.store.core import StoreCore
from childguard.store.models import (
    OutboxRow,
    utc,
    utc_opt,
    utcnow,
)


@dataclass(frozen=True)


class OutboxItem:
    """A claimed unit of outbox work (lease until `claimed_until`)."""

    id: int
    item_id: str
    kind: str
    attempts: int
    created_at: datetime
    claimed_until: datetime | None = None
    last_error: str | None = None
    task_ref: str | None = None


def _outbox_item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(id=row.id, item_id=row.item_id, kind=row.kind, attempts=row.attempts,
                      created_at=utc(row.created_at), claimed_until=utc_opt(row.claimed_until),
                      last_error=row.last_error, task_ref=row.task_ref)


class OutboxStore(StoreCore):
    """Outbox rows: enqueue (inside a caller's transaction), claim, done, failed, stats."""

    def _enqueue(self, s: Session, item_id: str, kind: str) -> None:
        """One outbox row per (item, kind): a re-classified item does not become a second task."""
        existing = s.scalar(select(OutboxRow.id).where(OutboxRow.item_id == item_id,
                                                       OutboxRow.kind == kind))
        if existing is None:
            now = utcnow()
            s.add(OutboxRow(item_id=item_id, kind=kind, status="pending", attempts=0,
                            next_attempt_at=now, created_at=now))
            s.flush()

    def claim_outbox(self, limit: int, now: datetime | None = None) -> list[OutboxItem]:
        """Lease up to `limit` due rows (pending and due, or with an expired lease)."""
        if limit <= 0:
            return []
        now = utc(now) if now is not None else utcnow()
        due = or_(and_(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= now),
                  and_(OutboxRow.status == "claimed", OutboxRow.claimed_until <= now))
        claimed: list[OutboxItem] = []
        with self._tx() as s:
            self._write_lock(s)
            q = (select(OutboxRow.id).where(due)
                 .order_by(OutboxRow.next_attempt_at, OutboxRow.id).limit(limit))
            if self._pg:
                q = q.with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            for oid in ids:
                res = s.execute(update(OutboxRow).where(OutboxRow.id == oid, due)
                                .values(status="claimed", claimed_until=now + self.outbox_lease,
                                        attempts=OutboxRow.attempts + 1)
                                .execution_options(synchronize_session=False))
                if getattr(res, "rowcount", 0) == 1:
                    row = s.get(OutboxRow, oid, populate_existing=True)
                    if row is not None:
                        claimed.append(_outbox_item(row))
        return claimed

    def outbox_done(self, outbox_id: int, task_ref: str, *, actor: str = "review-bridge") -> None:
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(OutboxRow, outbox_id, with_for_update=self._pg)
            if row is None:
                raise NotFound(f"no outbox row {outbox_id}")
            if row.status == "done" and row.task_ref == task_ref:
                return
            row.status, row.task_ref, row.done_at = "done", task_ref, utcnow()
            row.claimed_until, row.last_error = None, None
            audit_log.append(s, actor, "outbox.done", row.item_id,
                             {"outbox_id": outbox_id, "kind": row.kind, "task_ref": task_ref,
                              "attempts": row.attempts})

    def outbox_failed(self, outbox_id: int, error: str, retry_at: datetime) -> None:
        """Put a claimed row back, due again at `retry_at` (the worker's backoff)."""
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(OutboxRow, outbox_id, with_for_update=self._pg)
            if row is None:
                raise NotFound(f"no outbox row {outbox_id}")
            if row.status == "done":
                return  # a late failure report must not resurrect finished work
            row.status, row.next_attempt_at = "pending", utc(retry_at)
            row.claimed_until, row.last_error = None, error[:2000]

    def outbox_stats(self, now: datetime | None = None) -> dict[str, Any]:
        """depth (not done), per-status counts, retrying (failed at least once), oldest age."""
        now = utc(now) if now is not None else utcnow()
        with self._sessions() as s:
            counts = {str(st): int(n) for st, n in s.execute(
                select(OutboxRow.status, func.count()).group_by(OutboxRow.status))}
            retrying = s.scalar(select(func.count()).where(OutboxRow.status == "pending",
                                                           OutboxRow.last_error.is_not(None)))
            oldest = s.scalar(select(func.min(OutboxRow.created_at))
                              .where(OutboxRow.status != "done"))
        pending, claimed = int(counts.get("pending", 0)), int(counts.get("claimed", 0))
        return {
            "depth": pending + claimed,
            "pending": pending,
            "claimed": claimed,
            "done": int(counts.get("done", 0)),
            "retrying": int(retrying or 0),
            "oldest_age_s": max(0.0, (now - utc(oldest)).total_seconds()) if oldest else 0.0,
        }
