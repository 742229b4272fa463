"""What the review bridge needs from the store, as a Protocol.

The real implementation is `childguard.store.Store` (owned by the store engineer); the bridge is
typed against this narrow view so it can be read (and tested with a reference store) on its own.
Outbox rows are read by attribute with small helpers, tolerant of the exact row class.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from childguard.schema import ReviewDecision, Verdict


class ReviewStore(Protocol):
    def claim_outbox(self, limit: int, now: datetime | None = None) -> list[Any]: ...

    def outbox_done(self, outbox_id: Any, task_ref: str) -> None: ...

    def outbox_failed(self, outbox_id: Any, error: str, retry_at: datetime) -> None: ...

    def outbox_stats(self) -> dict[str, Any]: ...

    def get_verdict(self, item_id: str) -> Verdict | None: ...

    def record_review_decision(self, decision: ReviewDecision, *, actor: str) -> Verdict: ...

    def review_history(self, item_id: str) -> list[ReviewDecision]: ...

    def item_info(self, item_id: str) -> Any: ...

    def append_audit(self, actor: str, action: str, subject: str, payload: dict[str, Any]
                     ) -> None: ...

    def get_media(self, media_id: str) -> tuple[bytes, str] | None: ...

    def item_media(self, item_id: str) -> list[tuple[str, str]]: ...


def outbox_id(row: Any) -> Any:
    for name in ("outbox_id", "id"):
        value = getattr(row, name, None)
        if value is not None:
            return value
    raise AttributeError(f"outbox row {type(row).__name__} has no outbox_id/id")


def outbox_attempts(row: Any) -> int:
    return int(getattr(row, "attempts", 0) or 0)


def outbox_created(row: Any) -> datetime:
    value = getattr(row, "created_at", None)
    if not isinstance(value, datetime):
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def info_field(info: Any, name: str) -> Any:
    if isinstance(info, dict):
        return info.get(name)
    return getattr(info, name, None)


def review_content(store: Any, item_id: str) -> dict[str, Any] | None:
    """The item's text and context for the reviewer, if the store keeps them for review."""
    fn = getattr(store, "review_content", None)
    if fn is None:
        return None
    result = fn(item_id)
    return dict(result) if result else None
