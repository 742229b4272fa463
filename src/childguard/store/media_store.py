"""Review media in the store: image bytes and review text kept in the restricted media area
for the reviewer, with an expiry set at the final decision and purged on schedule (files in
`media.py`'s area, rows here; every store and purge is an audit event)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select

from childguard.errors import UserError
from childguard.store import audit as audit_log
from childguard.store.core import REVIEW_CONTENT_MIME, StoreCore, sha256_hex
from childguard.store.media import new_media_id, normalise_mime
from childguard.store.models import (
    ItemRow,
    MediaRow,
    utc,
    utc_opt,
    utcnow,
)


def sniff_image_mime(data: bytes) -> str:
    """The image type from magic bytes (the review screen needs a content type)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"


class MediaStore(StoreCore):
    """Review media: put, get while retained, the review text, expiry, purge."""

    def put_media(self, item_id: str, data: bytes, mime: str, *,
                  actor: str = "system") -> str:
        """Keep image bytes for review; returns the media id (expiry set at final decision)."""
        area = self._media_area()
        if not data:
            raise UserError("review media must not be empty; received 0 bytes")
        mime = normalise_mime(mime)
        media_id = new_media_id()
        area.write(media_id, data)
        try:
            with self._tx() as s:
                self._write_lock(s)
                s.add(MediaRow(id=media_id, item_id=item_id, mime=mime, size=len(data),
                               sha256=sha256_hex(data), created_at=utcnow()))
                item = s.get(ItemRow, item_id)
                if item is not None and item.media_id is None:
                    item.media_id = media_id
                audit_log.append(s, actor, "media.stored", item_id,
                                 {"media_id": media_id, "size": len(data),
                                  "sha256": sha256_hex(data)})
        except BaseException:
            area.discard(media_id)
            raise
        return media_id

    def get_media(self, media_id: str, now: datetime | None = None) -> tuple[bytes, str] | None:
        """(bytes, mime) while the media is retained; None once expired, purged or unknown."""
        now = utc(now) if now is not None else utcnow()
        with self._sessions() as s:
            row = s.get(MediaRow, media_id)
            if row is None or row.purged_at is not None:
                return None
            if row.expires_at is not None and utc(row.expires_at) <= now:
                return None
            mime = row.mime
        data = self._media_area().read(media_id)
        return None if data is None else (data, mime)

    def item_media(self, item_id: str) -> list[tuple[str, str]]:
        """(media id, mime) of an item's retained review media, oldest first."""
        with self._sessions() as s:
            rows = s.execute(select(MediaRow.id, MediaRow.mime)
                             .where(MediaRow.item_id == item_id, MediaRow.purged_at.is_(None))
                             .order_by(MediaRow.created_at)).all()
        return [(str(i), str(m)) for i, m in rows]

    def review_content(self, item_id: str, now: datetime | None = None) -> dict[str, Any] | None:
        """The text and context kept for the reviewer ({"text", "context": [{author, text,
        sent_at}]}), or None when the item had none, or once it expired or was purged."""
        now = utc(now) if now is not None else utcnow()
        with self._sessions() as s:
            row = s.scalar(select(MediaRow)
                           .where(MediaRow.item_id == item_id,
                                  MediaRow.mime == REVIEW_CONTENT_MIME,
                                  MediaRow.purged_at.is_(None))
                           .order_by(MediaRow.created_at.desc()).limit(1))
            if row is None or (row.expires_at is not None and utc(row.expires_at) <= now):
                return None
            media_id = row.id
        data = self._media_area().read(media_id)
        if data is None:
            return None
        value = json.loads(data)
        return value if isinstance(value, dict) else None

    def media_expiry(self, media_id: str) -> datetime | None:
        with self._sessions() as s:
            row = s.get(MediaRow, media_id)
            return None if row is None else utc_opt(row.expires_at)

    def purge_media(self, now: datetime | None = None, *, actor: str = "retention") -> int:
        """Delete media files past their expiry; returns how many were purged."""
        now = utc(now) if now is not None else utcnow()
        area = self._media_area()
        purged: list[str] = []
        with self._tx() as s:
            self._write_lock(s)
            q = select(MediaRow).where(MediaRow.purged_at.is_(None),
                                       MediaRow.expires_at.is_not(None),
                                       MediaRow.expires_at <= now)
            for row in s.scalars(q.with_for_update(skip_locked=True) if self._pg else q):
                area.delete(row.id)
                row.purged_at = now
                purged.append(row.id)
            if purged:
                audit_log.append(s, actor, "media.purged", "media",
                                 {"count": len(purged), "media_ids": purged})
        return len(purged)
