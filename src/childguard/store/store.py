"""`Store`: the one object that writes and reads verdicts, reviews, outbox, audit, keys, media,
split by concern into one class per module (verdicts.py, outbox_store.py, audit_store.py,
key_store.py, media_store.py over core.py), combined here behind the one transaction a verdict
needs.

Every write that changes what happened to an item is one transaction together with its audit
event, so the audit log can never miss (or invent) a verdict: `save_verdict` writes the item row,
the verdict, the audit event, the outbox row (decision == review) and the review media row in one
commit; if anything fails, none of it is there (a media file written ahead is removed again).

Concurrency: SQLite has one writer at a time; each write transaction starts with a write
(`_write_lock`) so it holds the write lock before it reads anything it later depends on, which
makes read-then-write sequences atomic. On PostgreSQL the same places lock rows
(`SELECT ... FOR UPDATE`, `SKIP LOCKED` for outbox claims, the audit head row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from childguard.errors import DependencyError
from childguard.store.audit_store import AuditStore
from childguard.store.core import OUTBOX_REVIEW_TASK, REVIEW_CONTENT_MIME
from childguard.store.db import make_engine
from childguard.store.key_store import LAST_USED_RESOLUTION, KeyCheck, KeyStore
from childguard.store.media_store import MediaStore, sniff_image_mime
from childguard.store.migrate import migrate
from childguard.store.outbox_store import OutboxItem
from childguard.store.training_store import KEY_FILE
from childguard.store.verdicts import ItemInfo, VerdictStore

if TYPE_CHECKING:
    from childguard.settings import Settings

__all__ = ["LAST_USED_RESOLUTION", "OUTBOX_REVIEW_TASK", "REVIEW_CONTENT_MIME", "ItemInfo",
           "KeyCheck", "OutboxItem", "Store", "sniff_image_mime"]


class Store(VerdictStore, AuditStore, KeyStore, MediaStore):
    """Verdicts, review decisions, outbox, audit log, API keys, review media and the reviewed
    content retained for evaluation."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """Open (and migrate) the configured database; media under `settings.media_dir`."""
        engine = make_engine(settings.db_url)
        try:
            migrate(engine)
        except OperationalError as exc:
            engine.dispose()
            where = settings.db_url.split("@")[-1]  # no credentials in messages
            raise DependencyError(f"database {where} is unreachable or not writable: "
                                  f"{str(exc.orig).splitlines()[0] if exc.orig else exc}"
                                  ) from exc
        return cls(engine, media_dir=settings.media_dir,
                   media_retention_hours=settings.review.media_retention_hours,
                   training_retention_days=settings.review.training_retention_days,
                   training_key=settings.home / "keys" / KEY_FILE)
