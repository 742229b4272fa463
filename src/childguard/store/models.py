"""The store's tables: items, verdicts, review decisions, outbox, audit log, API keys, media.

Raw content never reaches these tables. An item row keeps its ids and content hashes (sha256 of
the text, image sha256/md5 and whatever the hash stage computed); a verdict row keeps the
`schema.Verdict` JSON, which by construction holds scores, signals and rationale only. The one
place image bytes may live is the review media area (files on disk, see `media.py`), and only
for items sent to human review, until a retention period after the final decision.

Timestamps are timezone-aware UTC in Python; SQLite stores them naive, so readers normalise
with `utc()`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from childguard.store.db import Base

#: integer primary keys: 64-bit on PostgreSQL, SQLite's rowid alias (INTEGER) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")

TS = DateTime(timezone=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime (SQLite hands back naive ones)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


class ItemRow(Base):
    """One classified item: ids and content hashes only, never the content."""

    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    text_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    text_chars: Mapped[int | None] = mapped_column(Integer)
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    image_md5: Mapped[str | None] = mapped_column(String(32))
    hashes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    source: Mapped[str | None] = mapped_column(String(128))
    external_id: Mapped[str | None] = mapped_column(String(256), index=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    media_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class VerdictRow(Base):
    """A verdict on an item: the model's (`kind='model'`) or a reviewer's (`kind='review'`).

    Rows are only ever added; the final verdict is the newest review row, else the newest model
    row, so every earlier verdict stays readable.
    """

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_item_kind", "item_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id"))
    kind: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16))
    report: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_version: Mapped[str] = mapped_column(String(128), default="")
    verdict: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)


class ReviewDecisionRow(Base):
    """Every decision a reviewer made on an item, numbered per item (history is kept)."""

    __tablename__ = "review_decisions"
    __table_args__ = (UniqueConstraint("item_id", "revision"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(256))
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    comment: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(TS)
    task_id: Mapped[str | None] = mapped_column(String(128))
    annotation_id: Mapped[str | None] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(256))
    recorded_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class OutboxRow(Base):
    """Work leaving the store for another system (today: one Label Studio task per item).

    `status`: pending (due at `next_attempt_at`) -> claimed (leased until `claimed_until`; an
    expired lease is claimable again, so a crashed worker loses nothing) -> done. A failure puts
    the row back to pending with a later `next_attempt_at` (backoff chosen by the worker).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("item_id", "kind"),
        Index("ix_outbox_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TS)
    claimed_until: Mapped[datetime | None] = mapped_column(TS)
    last_error: Mapped[str | None] = mapped_column(Text)
    task_ref: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(TS)


class AuditRow(Base):
    """One audit event. Append-only (triggers refuse UPDATE/DELETE) and hash-chained."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(TS)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(256), index=True)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON text, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain head (one row, id=1): last seq and hash. Appenders lock it to serialise."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ApiKeyRow(Base):
    """An API key: the secret itself is never stored, only a salted sha256 of it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(256), default="system")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(TS)
    last_used_at: Mapped[datetime | None] = mapped_column(TS)


class MediaRow(Base):
    """An image kept for human review (the bytes are a 0600 file named by `id`)."""

    __tablename__ = "media"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(128), index=True)
    mime: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(TS, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(TS)
