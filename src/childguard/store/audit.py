"""The append-only, hash-chained audit log.

Each row carries `hash = sha256(prev_hash + canonical(row))`, where the canonical form is the
compact, key-sorted JSON of (seq, ts, actor, action, subject, payload). Changing any field of a
row breaks its own hash; removing or reordering rows breaks the `prev_hash` link of the next
row (and the seq sequence); truncating the tail disagrees with the chain head. Database
triggers (see the migration) refuse UPDATE and DELETE, and the chain catches whoever bypasses
them.

Appends serialise on the one `audit_head` row: `UPDATE audit_head SET seq = seq + 1 ...
RETURNING` takes its row lock on PostgreSQL (a concurrent appender waits and then sees the new
head), and on SQLite it is a write that takes the database write lock before anything is read,
so two appenders can never both extend the same head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from childguard.store.models import AuditHeadRow, AuditRow, utc, utcnow

GENESIS = "0" * 64
HEAD_ID = 1


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"audit payload value of type {type(value).__name__} is not JSON")


def format_ts(ts: datetime) -> str:
    """UTC, microseconds, no offset: identical after a round trip through SQLite or PostgreSQL."""
    return utc(ts).replace(tzinfo=None).isoformat(timespec="microseconds")


def row_hash(prev_hash: str, seq: int, ts: datetime, actor: str, action: str, subject: str,
             payload: str) -> str:
    canonical = canonical_json({"seq": seq, "ts": format_ts(ts), "actor": actor,
                                "action": action, "subject": subject, "payload": payload})
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    ts: datetime
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": utc(self.ts).isoformat(), "actor": self.actor,
                "action": self.action, "subject": self.subject, "payload": self.payload,
                "hash": self.hash}


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    rows: int
    first_bad: int | None = None
    reason: str = ""
    #: hash of the verified chain head; record it elsewhere (a ticket, a log shipper) to
    #: detect a rewrite of the whole chain, which no in-database check can see
    head_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_bad": self.first_bad,
                "reason": self.reason, "head_hash": self.head_hash}


def append(session: Session, actor: str, action: str, subject: str,
           payload: dict[str, Any]) -> AuditRow:
    """Append one event inside the caller's transaction (commits with it, rolls back with it)."""
    body = canonical_json(payload)
    head = session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == HEAD_ID)
        .values(seq=AuditHeadRow.seq + 1)
        .returning(AuditHeadRow.seq, AuditHeadRow.hash)
    ).one_or_none()
    if head is None:  # first event ever: create the head (the PK makes a race fail, not fork)
        session.add(AuditHeadRow(id=HEAD_ID, seq=1, hash=GENESIS))
        session.flush()
        seq, prev = 1, GENESIS
    else:
        seq, prev = int(head[0]), str(head[1])
    ts = utcnow()
    digest = row_hash(prev, seq, ts, actor, action, subject, body)
    row = AuditRow(seq=seq, ts=ts, actor=actor, action=action, subject=subject, payload=body,
                   prev_hash=prev, hash=digest)
    session.add(row)
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == HEAD_ID).values(hash=digest))
    session.flush()
    return row


def _iter_rows(session: Session, upto: int, batch: int = 1000) -> Iterator[AuditRow]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditRow).where(AuditRow.seq > last, AuditRow.seq <= upto)
            .order_by(AuditRow.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def _head(session: Session) -> tuple[int, str]:
    head = session.execute(select(AuditHeadRow.seq, AuditHeadRow.hash)
                           .where(AuditHeadRow.id == HEAD_ID)).one_or_none()
    return (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)


def verify(session: Session) -> AuditReport:
    """Walk the chain from the start; report the first row that does not fit.

    Safe while others append: the head is read first and only rows up to it are checked (a
    row commits together with the head that covers it); rows past a re-read head are rows
    nobody appended through the chain.
    """
    head_seq, head_hash = _head(session)
    prev = GENESIS
    expected = 1
    count = 0
    for row in _iter_rows(session, head_seq):
        count += 1
        if row.seq != expected:
            return AuditReport(False, count, row.seq,
                               f"sequence gap: expected seq {expected}, found {row.seq} "
                               "(a row was removed or renumbered)")
        if row.prev_hash != prev:
            return AuditReport(False, count, row.seq,
                               f"row {row.seq} does not link to row {row.seq - 1}: prev_hash "
                               "differs (a row was removed, reordered or changed)")
        digest = row_hash(row.prev_hash, row.seq, row.ts, row.actor, row.action, row.subject,
                          row.payload)
        if digest != row.hash:
            return AuditReport(False, count, row.seq,
                               f"row {row.seq} content does not match its hash (row changed)")
        prev = row.hash
        expected += 1
    if head_seq != count or head_hash != prev:
        return AuditReport(False, count, count + 1 if head_seq > count else head_seq,
                           f"chain head says {head_seq} rows ending in {head_hash[:12]}…, the "
                           f"log has {count} rows ending in {prev[:12]}… (rows removed at the "
                           "end, or the head was changed)")
    # the last row first, the head second: a row seen here committed with its head update,
    # so the re-read head covers it unless the row was inserted behind the chain's back
    last = session.scalar(select(func.max(AuditRow.seq)))
    now_seq, _ = _head(session)
    if last is not None and int(last) > now_seq:
        return AuditReport(False, count, now_seq + 1,
                           f"rows up to {last} lie beyond the chain head ({now_seq}): "
                           "inserted outside the audit API")
    return AuditReport(True, count, None, f"{count} rows, chain intact", head_hash=prev)


def tail(session: Session, n: int = 20) -> list[AuditEvent]:
    rows = session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(n)).all()
    return [to_event(r) for r in reversed(rows)]


def to_event(row: AuditRow) -> AuditEvent:
    return AuditEvent(seq=row.seq, ts=utc(row.ts), actor=row.actor, action=row.action,
                      subject=row.subject, payload=json.loads(row.payload), hash=row.hash)


# -- append-only triggers (installed by the initial migration) ----------------------------------
SQLITE_TRIGGERS = [
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
]
SQLITE_DROP_TRIGGERS = [
    "DROP TRIGGER IF EXISTS audit_log_no_update",
    "DROP TRIGGER IF EXISTS audit_log_no_delete",
]
POSTGRES_TRIGGERS = [
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
]
POSTGRES_DROP_TRIGGERS = [
    "DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log",
    "DROP FUNCTION IF EXISTS audit_log_append_only()",
]


def trigger_sql(dialect: str, *, drop: bool = False) -> list[str]:
    if dialect == "postgresql":
        return POSTGRES_DROP_TRIGGERS if drop else POSTGRES_TRIGGERS
    if dialect == "sqlite":
        return SQLITE_DROP_TRIGGERS if drop else SQLITE_TRIGGERS
    return []


__all__ = ["AuditEvent", "AuditReport", "append", "canonical_json", "tail", "trigger_sql",
           "verify"]
