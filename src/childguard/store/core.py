"""The store's core: one engine, one session factory, the write lock and the media area that
every concern of the store (verdicts, reviews, outbox, audit, keys, media) shares.

Concurrency: SQLite has one writer at a time; each write transaction starts with a write
(`_write_lock`) so it holds the write lock before it reads anything it later depends on, which
makes read-then-write sequences atomic. On PostgreSQL the same places lock rows
(`SELECT ... FOR UPDATE`, `SKIP LOCKED` for outbox claims, the audit head row).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from childguard.errors import UserError
from childguard.store.db import session_factory, transaction
from childguard.store.media import MediaArea

OUTBOX_REVIEW_TASK = "review_task"
#: media type of the text + context kept for the reviewer (a file in the media area, never a row)
REVIEW_CONTENT_MIME = "application/vnd.childguard.review-content+json"
#: media type of reviewed text + context kept, encrypted, for evaluation and training
TRAINING_CONTENT_MIME = "application/vnd.childguard.training-content"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StoreCore:
    """The shared plumbing of the store's concerns (`Store` combines them)."""

    def __init__(self, engine: Engine, *, media_dir: Path | None = None,
                 media_retention_hours: float = 72.0, outbox_lease_s: float = 300.0,
                 training_retention_days: float = 0.0,
                 training_key: Path | None = None) -> None:
        if media_retention_hours <= 0:
            raise UserError(f"media_retention_hours must be > 0; received {media_retention_hours}")
        self._engine = engine
        self._sessions: sessionmaker[Session] = session_factory(engine)
        self._media = MediaArea(media_dir) if media_dir is not None else None
        self.media_retention = timedelta(hours=media_retention_hours)
        if training_retention_days < 0:
            raise UserError("training_retention_days must be >= 0 (0 = off); received "
                            f"{training_retention_days}")
        self.training_retention = timedelta(days=training_retention_days)
        self._training_key = training_key
        self.outbox_lease = timedelta(seconds=outbox_lease_s)
        self._pg = engine.dialect.name == "postgresql"

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # -- plumbing ---------------------------------------------------------------------------
    def _tx(self) -> Any:
        return transaction(self._sessions)

    def _write_lock(self, session: Session) -> None:
        """SQLite: take the database write lock now, before this transaction reads anything.

        An UPDATE matching no row still opens a write transaction. PostgreSQL needs no global
        lock: callers lock the rows they depend on.
        """
        if not self._pg:
            session.execute(text("UPDATE audit_head SET seq = seq WHERE id = 0"))

    def _media_area(self) -> MediaArea:
        if self._media is None:
            raise UserError("this store has no media directory; build it with "
                            "Store.from_settings(settings) or Store(engine, media_dir=...)")
        return self._media
