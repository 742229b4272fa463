"""The review media area: what a human reviewer must see, kept on disk only while needed.

That is the image bytes and the text (with its conversation context) of items sent to review:
nowhere else does raw content persist.

Files live in one directory (mode 0700), each named by a random id (no item id, no hash in the
name) with mode 0600, so neither the path nor a directory listing says anything about the
content. The database row holds the expiry, set when the item gets its final decision (decision
time + `review.media_retention_hours`); `Store.purge_media()` deletes expired files. Access goes
through the authenticated, expiring media endpoint of the review bridge, never a static server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from childguard.errors import NotFound, UserError

#: the image types the review screen shows; anything else is stored as octet-stream
ALLOWED_MIME = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp",
                          "image/tiff", "application/octet-stream",
                          "application/vnd.childguard.review-content+json",
                          # a video kept for review: never served to the review screen (its
                          # keyframe sheet is); read back for the review-confirmed bank
                          "video/mp4", "video/quicktime", "video/webm"})


def sniff_video_mime(data: bytes) -> str:
    """The video type from magic bytes: ISO BMFF ('ftyp', QuickTime brand 'qt  ') or
    Matroska/WebM (EBML header)."""
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return "application/octet-stream"


def new_media_id() -> str:
    return secrets.token_hex(16)


def _check_id(media_id: str) -> str:
    if len(media_id) != 32 or any(c not in "0123456789abcdef" for c in media_id):
        raise NotFound(f"media id must be 32 lowercase hex characters; received "
                       f"{len(media_id)} characters")
    return media_id


class MediaArea:
    """Restricted file storage under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    def path(self, media_id: str) -> Path:
        return self.root / _check_id(media_id)

    def write(self, media_id: str, data: bytes) -> Path:
        self._ensure_root()
        path = self.path(media_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # independent of the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def read(self, media_id: str) -> bytes | None:
        try:
            return self.path(media_id).read_bytes()
        except (FileNotFoundError, NotFound):
            return None

    def delete(self, media_id: str) -> bool:
        try:
            self.path(media_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def discard(self, media_id: str) -> None:
        with contextlib.suppress(OSError, NotFound):
            self.path(media_id).unlink()


def normalise_mime(mime: str) -> str:
    value = (mime or "").split(";", 1)[0].strip().lower()
    if value not in ALLOWED_MIME:
        raise UserError(f"media type {value or '(empty)'!r} is not accepted for review media; "
                        f"allowed: {', '.join(sorted(ALLOWED_MIME))}")
    return value
