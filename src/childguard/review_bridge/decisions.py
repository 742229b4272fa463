"""Annotations become decisions: store, audit, callback, hash bank.

One path for both ways an annotation arrives (the webhook and the periodic reconcile), so a
decision is recorded the same way whichever comes first, and exactly once:

- Idempotent: an annotation whose id and `updated_at` we already recorded (or an older version
  of it, delivered late) changes nothing. A per-item lock plus the store's unique
  (item_id, revision) keep concurrent deliveries of the same annotation to one row.
- A change of mind is a new revision: the store keeps the history, the final verdict follows the
  newest revision.
- Follow-ups (callback, hash bank) run after the decision is stored; their failures are audited
  and never undo or block the decision.

Escalation learnings flow upstream: a confirmed block of an image adds its hashes to the
`review-confirmed` bank (a re-upload then matches at once, without models); an overturn (block
-> allow) removes them again. A video adds its vPDQ entry and file hashes (its edits then
match too).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from childguard.errors import NotFound, UserError
from childguard.policy import Policy
from childguard.review_bridge.config import parse_annotation
from childguard.review_bridge.ports import ReviewStore, info_field
from childguard.review_bridge.signing import SIGNATURE_HEADER, sign_callback
from childguard.schema import ReviewDecision, ReviewOutcome, Severity, Verdict

log = logging.getLogger("childguard.review")

REVIEW_BANK = "review-confirmed"
ACTOR = "review_bridge"


@dataclass(frozen=True)
class HandleResult:
    """What happened to one annotation: recorded, duplicate or ignored (with the reason)."""

    status: str  # "recorded" | "duplicate" | "ignored"
    item_id: str | None = None
    reason: str = ""
    decision: ReviewDecision | None = None
    verdict: Verdict | None = None
    previous: ReviewDecision | None = None


def parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass
class CallbackNotifier:
    """POSTs a signed JSON notification to a product service's callback URL."""

    key: str
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.5
    transport: httpx.BaseTransport | None = None

    def payload(self, decision: ReviewDecision, verdict: Verdict, info: Any) -> dict[str, Any]:
        return {
            "event": "review.decision",
            "item_id": decision.item_id,
            "external_id": info_field(info, "external_id"),
            "source": info_field(info, "source"),
            "decision": verdict.decision.value,
            "outcome": decision.outcome.value,
            "report": decision.report,
            "categories": list(decision.categories),
            "revision": decision.revision,
            "decided_at": decision.decided_at.isoformat(),
        }

    def send(self, url: str, payload: dict[str, Any]) -> int:
        """Deliver; returns the HTTP status. Raises httpx.HTTPError after the last attempt."""
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        last: Exception | None = None
        with httpx.Client(timeout=self.timeout_s, transport=self.transport) as http:
            for attempt in range(self.attempts):
                try:
                    r = http.post(url, content=body, headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign_callback(self.key, body),
                    })  # fmt: skip
                    if r.status_code < 500:
                        return r.status_code
                    last = httpx.HTTPStatusError(f"status {r.status_code}", request=r.request,
                                                 response=r)
                except httpx.HTTPError as exc:
                    last = exc
                time.sleep(self.backoff_s * (2**attempt))
        assert last is not None
        raise last


HashServiceFactory = Callable[[], Any]


@dataclass
class DecisionService:
    """Turns Label Studio annotations into recorded review decisions and their follow-ups."""

    store: ReviewStore
    policy: Policy
    notifier: CallbackNotifier
    hash_service: HashServiceFactory | None = None
    reviewer_name: Callable[[int], str] | None = None
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _hashes: Any = None

    def _lock(self, item_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(item_id, threading.Lock())

    # -- the one entry point ---------------------------------------------------------------
    def handle(self, task: dict[str, Any], annotation: dict[str, Any], *, source: str
               ) -> HandleResult:
        """Record the decision in `annotation` on `task` (idempotent). Never raises for
        unknown tasks or annotations without a decision: those are ignored and logged by id."""
        data = task.get("data") or {}
        item_id = data.get("item_id")
        task_id = task.get("id") or annotation.get("task")
        ann_id = annotation.get("id")
        if not item_id:
            log.warning("review: ignored annotation %s on task %s: no item_id in task data",
                        ann_id, task_id)
            return HandleResult("ignored", reason="task has no item_id")
        item_id = str(item_id)
        try:
            info = self.store.item_info(item_id)
        except NotFound:
            info = None
        if info is None:
            log.warning("review: ignored annotation %s on task %s: unknown item %s", ann_id,
                        task_id, item_id)
            return HandleResult("ignored", item_id, reason="unknown item")
        if annotation.get("was_cancelled"):
            return HandleResult("ignored", item_id, reason="annotation skipped by the reviewer")
        try:
            parsed = parse_annotation(annotation.get("result") or [], self.policy)
        except UserError as exc:
            log.warning("review: ignored annotation %s on item %s: %s", ann_id, item_id, exc)
            return HandleResult("ignored", item_id, reason=str(exc))
        decided_at = parse_ts(annotation.get("updated_at") or annotation.get("created_at"))
        reviewer = self._reviewer(annotation)

        with self._lock(item_id):
            history = self.store.review_history(item_id)
            latest = history[-1] if history else None
            for old in history:
                if old.annotation_id == str(ann_id) and _aware(old.decided_at) >= decided_at:
                    return HandleResult("duplicate", item_id, decision=old, previous=latest)
            if (latest is not None and latest.annotation_id == str(ann_id)
                    and latest.outcome is parsed.outcome
                    and tuple(latest.categories) == parsed.categories
                    and latest.comment == parsed.comment):
                # re-saved without a change: not a new revision
                return HandleResult("duplicate", item_id, decision=latest, previous=latest)
            decision = ReviewDecision(
                item_id=item_id, outcome=parsed.outcome, reviewer=reviewer,
                categories=parsed.categories, comment=parsed.comment, decided_at=decided_at,
                task_id=None if task_id is None else str(task_id),
                annotation_id=None if ann_id is None else str(ann_id),
                revision=(latest.revision + 1) if latest else 1,
            )  # fmt: skip
            verdict = self.store.record_review_decision(decision, actor=f"reviewer:{reviewer}")
            self.store.append_audit(ACTOR, "review.decision_received", item_id, {
                "via": source, "task_id": decision.task_id,
                "annotation_id": decision.annotation_id, "revision": decision.revision,
                "outcome": decision.outcome.value, "categories": list(decision.categories),
                "previous_outcome": latest.outcome.value if latest else None,
            })  # fmt: skip
        log.info("review: recorded item %s revision %d outcome %s via %s", item_id,
                 decision.revision, decision.outcome.value, source)
        return HandleResult("recorded", item_id, decision=decision, verdict=verdict,
                            previous=latest)

    def follow_up(self, result: HandleResult) -> None:
        """Callback + hash bank for a recorded decision; failures are audited, not raised."""
        if result.status != "recorded" or result.decision is None or result.verdict is None:
            return
        decision, verdict = result.decision, result.verdict
        try:
            info = self.store.item_info(decision.item_id)
        except NotFound:
            return
        self._update_bank(decision, result.previous, info)
        url = info_field(info, "callback_url")
        if url:
            payload = self.notifier.payload(decision, verdict, info)
            try:
                status = self.notifier.send(str(url), payload)
                self.store.append_audit(ACTOR, "review.callback_sent", decision.item_id,
                                        {"revision": decision.revision, "status": status})
            except httpx.HTTPError as exc:
                log.warning("review: callback for item %s failed: %s", decision.item_id,
                            type(exc).__name__)
                self.store.append_audit(ACTOR, "review.callback_failed", decision.item_id,
                                        {"revision": decision.revision,
                                         "error": type(exc).__name__})

    # -- helpers ---------------------------------------------------------------------------
    def _reviewer(self, annotation: dict[str, Any]) -> str:
        uid = annotation.get("completed_by")
        if isinstance(uid, dict):
            return str(uid.get("email") or uid.get("id"))
        if isinstance(uid, int) and self.reviewer_name is not None:
            try:
                return self.reviewer_name(uid)
            except Exception:  # naming is cosmetic; never lose a decision over it
                return f"labelstudio-user-{uid}"
        return f"labelstudio-user-{uid}" if uid is not None else "labelstudio-unknown"

    def _hash_service(self) -> Any:
        if self._hashes is None and self.hash_service is not None:
            self._hashes = self.hash_service()
        return self._hashes

    def _update_bank(self, decision: ReviewDecision, previous: ReviewDecision | None,
                     info: Any) -> None:
        media_id = info_field(info, "media_id")
        if not media_id or self.hash_service is None:
            return
        blocked_now = decision.outcome is not ReviewOutcome.ALLOW
        blocked_before = previous is not None and previous.outcome is not ReviewOutcome.ALLOW
        if blocked_now == blocked_before:
            return
        try:
            # a video item's review image is its keyframe sheet; the bank gets the video
            video_id = next((mid for mid, mime in self.store.item_media(decision.item_id)
                             if mime.startswith("video/")), None)
            media = self.store.get_media(str(video_id or media_id))
            if media is None:
                self.store.append_audit(ACTOR, "review.bank_skipped", decision.item_id,
                                        {"reason": "media purged", "revision": decision.revision})
                return
            hashes = self._hash_service()
            kind = "video" if video_id else "image"
            if blocked_now:
                hashes.ensure_bank(REVIEW_BANK, severity=Severity.HIGH, source="review",
                                   added_by=ACTOR)
                add = hashes.add_video_bytes if video_id else hashes.add_bytes
                entries = add(
                    REVIEW_BANK, media[0], added_by=f"reviewer:{decision.reviewer}",
                    metadata={"item_id": decision.item_id,
                              "revision": str(decision.revision),
                              "categories": ",".join(decision.categories)},
                )
                self.store.append_audit(ACTOR, "review.bank_added", decision.item_id,
                                        {"bank": REVIEW_BANK, "entries": len(entries),
                                         "media": kind})
            else:
                remove = hashes.remove_video_bytes if video_id else hashes.remove_bytes
                removed = remove(REVIEW_BANK, media[0],
                                 removed_by=f"reviewer:{decision.reviewer}")
                self.store.append_audit(ACTOR, "review.bank_removed", decision.item_id,
                                        {"bank": REVIEW_BANK, "entries": removed})
        except Exception as exc:  # the decision stands; the bank can be fixed by hand
            log.warning("review: hash bank update for item %s failed: %s", decision.item_id,
                        type(exc).__name__)
            self.store.append_audit(ACTOR, "review.bank_failed", decision.item_id,
                                    {"error": f"{type(exc).__name__}: {exc}"[:300]})
