"""Reviewed content kept for evaluation and training, under its own retention.

Why: the decisions that matter most for the model (its misses and false alarms) are the ones a
reviewer corrected, and the store otherwise keeps no text: the review copy is purged
`review.media_retention_hours` after the decision. So at decision time the reviewed item's text
and conversation context are copied into the restricted media area under
`review.training_retention_days` (default 365, as legal preservation rules commonly require;
0 turns it off):

- encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256) with a key kept in the data dir
  (`<home>/keys/training-content.key`, mode 0600), so a copy of the media folder alone is
  unreadable;
- read only through `training_content(..., actor=)`, which the evaluation commands call (the
  evaluation role); every read is an audit event naming the actor and the item ids;
- purged by the same schedule as review media (`purge_media`), each purge an audit event.

Images are never kept for training (only their hashes, which the item row already holds): the
image bytes follow the review purge.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from childguard.errors import UserError
from childguard.store import audit as audit_log
from childguard.store.core import REVIEW_CONTENT_MIME, TRAINING_CONTENT_MIME, StoreCore, sha256_hex
from childguard.store.media import new_media_id
from childguard.store.models import ItemRow, MediaRow, utc, utcnow

KEY_FILE = "training-content.key"


def _fernet(key_path: Path, *, create: bool) -> Any:
    from cryptography.fernet import Fernet

    if not key_path.exists():
        if not create:
            raise UserError(f"no training-content key at {key_path}: nothing was retained with "
                            "this data dir, or the key was removed (the retained content is "
                            "then unreadable)")
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, Fernet.generate_key())
        finally:
            os.close(fd)
    return Fernet(key_path.read_bytes().strip())


class TrainingStore(StoreCore):
    """Retained reviewed content: copy at decision time, audited reads, purge on expiry."""

    def _training_key_path(self) -> Path:
        if self._training_key is None:
            raise UserError("this store has no training-content key path; build it with "
                            "Store.from_settings(settings)")
        return self._training_key

    def _retain_for_training(self, s: Session, item_id: str, decided_at: datetime,
                             written: list[str]) -> str | None:
        """Inside the decision's transaction: keep (or extend) the item's training copy until
        `decided_at + training_retention`. Returns the media id, or None when retention is off
        or the item had no text; a new file's id is appended to `written` (the caller removes
        it if the transaction fails). Any failure here fails the decision's transaction: a
        decision is never recorded with its content silently dropped."""
        if self.training_retention <= timedelta(0) or self._media is None:
            return None
        expires = utc(decided_at) + self.training_retention
        existing = s.scalar(select(MediaRow).where(MediaRow.item_id == item_id,
                                                   MediaRow.mime == TRAINING_CONTENT_MIME,
                                                   MediaRow.purged_at.is_(None))
                            .order_by(MediaRow.created_at.desc()).limit(1))
        if existing is not None:
            if existing.expires_at is None or utc(existing.expires_at) < expires:
                existing.expires_at = expires
            return existing.id
        review = s.scalar(select(MediaRow).where(MediaRow.item_id == item_id,
                                                 MediaRow.mime == REVIEW_CONTENT_MIME,
                                                 MediaRow.purged_at.is_(None))
                          .order_by(MediaRow.created_at.desc()).limit(1))
        if review is None:
            return None
        plain = self._media.read(review.id)
        if plain is None:
            return None
        item = s.get(ItemRow, item_id)
        record = {"content": json.loads(plain),
                  "hashes": dict(item.hashes or {}) if item is not None else {},
                  "retained_at": utcnow().isoformat()}
        token = _fernet(self._training_key_path(), create=True).encrypt(
            audit_log.canonical_json(record).encode("utf-8"))
        media_id = new_media_id()
        self._media.write(media_id, token)
        written.append(media_id)
        s.add(MediaRow(id=media_id, item_id=item_id, mime=TRAINING_CONTENT_MIME,
                       size=len(token), sha256=sha256_hex(plain), created_at=utcnow(),
                       expires_at=expires))
        audit_log.append(s, "retention", "training_content.retained", item_id,
                         {"media_id": media_id, "expires_at": expires,
                          "content_sha256": sha256_hex(plain)})
        return media_id

    def training_content(self, item_ids: list[str], *, actor: str,
                         now: datetime | None = None) -> dict[str, dict[str, Any] | None]:
        """{item id: {"text", "context"} or None (never retained, expired or purged)}.

        The evaluation role's read: one audit event per call names the actor, how many items
        were asked for and which were found."""
        if not actor:
            raise UserError("reading retained review content needs an actor (who reads it)")
        now = utc(now) if now is not None else utcnow()
        out: dict[str, dict[str, Any] | None] = dict.fromkeys(item_ids)
        rows: dict[str, str] = {}
        with self._sessions() as s:
            for chunk in (item_ids[i:i + 500] for i in range(0, len(item_ids), 500)):
                for row in s.scalars(select(MediaRow).where(
                        MediaRow.item_id.in_(chunk), MediaRow.mime == TRAINING_CONTENT_MIME,
                        MediaRow.purged_at.is_(None)).order_by(MediaRow.created_at)):
                    if row.expires_at is None or utc(row.expires_at) > now:
                        rows[row.item_id] = row.id
        if rows:
            fernet = _fernet(self._training_key_path(), create=False)
            area = self._media_area()
            for item_id, media_id in rows.items():
                token = area.read(media_id)
                if token is None:
                    continue
                record = json.loads(fernet.decrypt(token))
                content = record.get("content")
                out[item_id] = content if isinstance(content, dict) else None
        found = sorted(k for k, v in out.items() if v is not None)
        with self._tx() as s:
            self._write_lock(s)
            audit_log.append(s, actor, "training_content.read", "training_content",
                             {"asked": len(item_ids), "found": len(found), "item_ids": found})
        return out
