"""Verdicts and review decisions: the item's history, each change in one transaction with
its audit event.

`save_verdict` writes the item row, the verdict, the audit event, the outbox row (decision ==
review) and the review media row in one commit; if anything fails, none of it is there (a media
file written ahead is removed again). `record_review_decision` numbers the reviewers' history
and makes the latest decision the item's final verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from childguard.errors import NotFound, UserError
from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    ReviewDecision,
    ReviewOutcome,
    Status,
    Verdict,
)
from childguard.store import audit as audit_log
from childguard.store.core import (
    OUTBOX_REVIEW_TASK,
    REVIEW_CONTENT_MIME,
    TRAINING_CONTENT_MIME,
    sha256_hex,
)
from childguard.store.media import new_media_id, normalise_mime
from childguard.store.media_store import sniff_image_mime
from childguard.store.models import (
    ItemRow,
    MediaRow,
    OutboxRow,
    ReviewDecisionRow,
    VerdictRow,
    utc,
    utcnow,
)
from childguard.store.outbox_store import OutboxStore
from childguard.store.training_store import TrainingStore


@dataclass(frozen=True)
class ItemInfo:
    """What the store knows about an item besides its verdicts: ids and hashes, no content."""

    item_id: str
    external_id: str | None
    source: str | None
    callback_url: str | None
    hashes: dict[str, str]
    media_id: str | None
    created_at: datetime
    task_ref: str | None = None
    outbox_status: str | None = None


def _review_decision(row: ReviewDecisionRow) -> ReviewDecision:
    return ReviewDecision(item_id=row.item_id, outcome=ReviewOutcome(row.outcome),
                          reviewer=row.reviewer, categories=tuple(row.categories or ()),
                          comment=row.comment or "", decided_at=utc(row.decided_at),
                          task_id=row.task_id, annotation_id=row.annotation_id,
                          revision=row.revision)


class VerdictStore(OutboxStore, TrainingStore):
    """Verdicts (model and review), review decisions, item info (ids and hashes only)."""

    def save_verdict(self, item: ContentItem, verdict: Verdict, *, actor: str,
                     hashes: dict[str, str] | None = None,
                     review_media: Sequence[tuple[bytes, str]] = ()) -> None:
        """Item row + verdict + audit event (+ outbox row and review media) in one transaction.

        For an item sent to review, the reviewer must see it: its image and its text (with the
        conversation context) go to the restricted media area, deleted a retention period after
        the final decision (`review_content`, `get_media`). Database rows keep hashes only.
        `hashes` (optional) adds hashes computed elsewhere: the hash stage's (`image_md5`,
        `image_sha256`, `pdq`, `Verdict.image_hashes()`), which are used as given instead of
        hashing the image again. `review_media` ((bytes, mime) pairs) is more for the reviewer
        of an item sent to review, in the same transaction: a video's keyframe sheet (the
        first image becomes the item's review image) and the video itself (kept for the
        review-confirmed bank, never served); all of it follows the review purge.
        """
        if verdict.item_id != item.id:
            raise UserError(f"verdict is for item {verdict.item_id!r} but the item is {item.id!r}")
        media_id: str | None = None
        content_id: str | None = None
        content_blob = b""
        needs_review = verdict.decision is Decision.REVIEW
        written: list[str] = []
        try:
            if needs_review and item.image is not None:
                media_id = new_media_id()
                self._media_area().write(media_id, item.image)
                written.append(media_id)
            extra_media: list[tuple[str, bytes, str]] = []
            for data, mime in (review_media if needs_review else ()):
                extra_media.append((new_media_id(), data, normalise_mime(mime)))
                self._media_area().write(extra_media[-1][0], data)
                written.append(extra_media[-1][0])
            if needs_review and (item.text or item.context):
                content_id = new_media_id()
                content_blob = audit_log.canonical_json({
                    "text": item.text,
                    "context": [m.model_dump(mode="json") for m in item.context],
                }).encode("utf-8")
                self._media_area().write(content_id, content_blob)
                written.append(content_id)
            with self._tx() as s:
                self._write_lock(s)
                row = self._upsert_item(s, item, hashes)
                verdict_json = verdict.model_dump(mode="json")
                s.add(VerdictRow(item_id=item.id, kind="model", decision=verdict.decision.value,
                                 status=verdict.status.value, report=verdict.report,
                                 policy_version=verdict.policy_version, verdict=verdict_json,
                                 created_at=utcnow()))
                if media_id is not None and item.image is not None:
                    s.add(MediaRow(id=media_id, item_id=item.id,
                                   mime=sniff_image_mime(item.image), size=len(item.image),
                                   sha256=row.image_sha256 or sha256_hex(item.image),
                                   created_at=utcnow()))
                    row.media_id = media_id
                for mid, data, mime in extra_media:
                    s.add(MediaRow(id=mid, item_id=item.id, mime=mime, size=len(data),
                                   sha256=sha256_hex(data), created_at=utcnow()))
                    if row.media_id is None and mime.startswith("image/"):
                        row.media_id = mid
                if needs_review and item.image_ref and row.media_id is None:
                    ref = s.get(MediaRow, item.image_ref)
                    if ref is not None and ref.purged_at is None:
                        row.media_id = ref.id
                if content_id is not None:
                    s.add(MediaRow(id=content_id, item_id=item.id, mime=REVIEW_CONTENT_MIME,
                                   size=len(content_blob), sha256=sha256_hex(content_blob),
                                   created_at=utcnow()))
                if needs_review:
                    self._enqueue(s, item.id, OUTBOX_REVIEW_TASK)
                audit_log.append(s, actor, "verdict.saved", item.id, {
                    "decision": verdict.decision.value,
                    "status": verdict.status.value,
                    "report": verdict.report,
                    "judged": verdict.judged,
                    "policy_id": verdict.policy_id,
                    "policy_version": verdict.policy_version,
                    "categories": sorted(c.code for c in verdict.categories
                                         if c.decision is not Decision.ALLOW),
                    "verdict_sha256": sha256_hex(audit_log.canonical_json(verdict_json).encode()),
                    "media_id": media_id,
                    "review_content": content_id is not None,
                })
        except BaseException:
            if self._media is not None:
                for mid in written:
                    self._media.discard(mid)
            raise

    def _upsert_item(self, s: Session, item: ContentItem,
                     extra: dict[str, str] | None) -> ItemRow:
        row = s.get(ItemRow, item.id)
        now = utcnow()
        if row is None:
            row = ItemRow(item_id=item.id, hashes={}, created_at=now)
            s.add(row)
        hashes = dict(row.hashes or {})
        if item.text is not None:
            row.text_sha256 = sha256_hex(item.text.encode("utf-8"))
            row.text_chars = len(item.text)
            hashes["text_sha256"] = row.text_sha256
        if item.image is not None:
            given = extra or {}
            row.image_sha256 = given.get("image_sha256") or sha256_hex(item.image)
            row.image_md5 = (given.get("image_md5")
                             or hashlib.md5(item.image, usedforsecurity=False).hexdigest())
            hashes["image_sha256"] = row.image_sha256
            hashes["image_md5"] = row.image_md5
        if extra:
            hashes.update({str(k): str(v) for k, v in extra.items()})
        row.hashes = hashes
        row.source = item.source if item.source is not None else row.source
        row.external_id = item.external_id if item.external_id is not None else row.external_id
        row.callback_url = (item.callback_url if item.callback_url is not None
                            else row.callback_url)
        row.updated_at = now
        return row

    def get_verdict(self, item_id: str) -> Verdict | None:
        """The final verdict: the newest reviewer verdict if any, else the newest model verdict."""
        with self._sessions() as s:
            row = self._final_verdict_row(s, item_id)
            return None if row is None else Verdict.model_validate(row.verdict)

    def get_model_verdict(self, item_id: str) -> Verdict | None:
        """The newest verdict of the pipeline, whatever reviewers decided since."""
        with self._sessions() as s:
            row = self._latest_verdict_row(s, item_id, "model")
            return None if row is None else Verdict.model_validate(row.verdict)

    def _latest_verdict_row(self, s: Session, item_id: str, kind: str) -> VerdictRow | None:
        return s.scalar(select(VerdictRow)
                        .where(VerdictRow.item_id == item_id, VerdictRow.kind == kind)
                        .order_by(VerdictRow.id.desc()).limit(1))

    def _final_verdict_row(self, s: Session, item_id: str) -> VerdictRow | None:
        return (self._latest_verdict_row(s, item_id, "review")
                or self._latest_verdict_row(s, item_id, "model"))

    def item_info(self, item_id: str) -> ItemInfo:
        with self._sessions() as s:
            row = s.get(ItemRow, item_id)
            if row is None:
                raise NotFound(f"no item with id {item_id!r} in the store")
            ob = s.scalar(select(OutboxRow).where(OutboxRow.item_id == item_id,
                                                  OutboxRow.kind == OUTBOX_REVIEW_TASK))
            return ItemInfo(item_id=row.item_id, external_id=row.external_id, source=row.source,
                            callback_url=row.callback_url, hashes=dict(row.hashes or {}),
                            media_id=row.media_id, created_at=utc(row.created_at),
                            task_ref=ob.task_ref if ob else None,
                            outbox_status=ob.status if ob else None)

    # -- review decisions -------------------------------------------------------------------
    def record_review_decision(self, decision: ReviewDecision, *, actor: str) -> Verdict:
        """Add a reviewer decision to the item's history and return the new final verdict.

        The store numbers the history itself (`revision` 1, 2, ... per item; the incoming
        `revision` is ignored). The same decision delivered twice (same annotation, outcome,
        categories, comment, reviewer and time) is recorded once. The final decision is the one
        with the latest `decided_at`, so a late, older delivery joins the history without
        overriding a newer decision. Media retention restarts from the final decision time;
        the reviewed content's training copy is made (or extended) in the same transaction,
        and its file is removed again if the transaction fails.
        """
        written: list[str] = []
        try:
            return self._record_review_decision(decision, actor=actor, written=written)
        except BaseException:
            if self._media is not None:
                for media_id in written:
                    self._media.discard(media_id)
            raise

    def _record_review_decision(self, decision: ReviewDecision, *, actor: str,
                                written: list[str]) -> Verdict:
        with self._tx() as s:
            self._write_lock(s)
            q = select(ItemRow).where(ItemRow.item_id == decision.item_id)
            item = s.scalar(q.with_for_update() if self._pg else q)
            if item is None:
                raise NotFound(f"review decision for unknown item {decision.item_id!r}")
            history = s.scalars(select(ReviewDecisionRow)
                                .where(ReviewDecisionRow.item_id == decision.item_id)
                                .order_by(ReviewDecisionRow.revision)).all()
            cats = sorted(set(decision.categories))
            for old in history:
                if (old.annotation_id == decision.annotation_id
                        and old.outcome == decision.outcome.value
                        and sorted(old.categories or []) == cats
                        and (old.comment or "") == decision.comment
                        and old.reviewer == decision.reviewer
                        and utc(old.decided_at) == utc(decision.decided_at)):
                    same = self._final_verdict_row(s, decision.item_id)
                    assert same is not None  # a decision exists, so a review verdict does
                    return Verdict.model_validate(same.verdict)
            revision = (history[-1].revision if history else 0) + 1
            now = utcnow()
            new = ReviewDecisionRow(item_id=decision.item_id, revision=revision,
                                    outcome=decision.outcome.value, reviewer=decision.reviewer,
                                    categories=cats, comment=decision.comment,
                                    decided_at=decision.decided_at, task_id=decision.task_id,
                                    annotation_id=decision.annotation_id, actor=actor,
                                    recorded_at=now)
            s.add(new)
            s.flush()
            latest = max([*history, new], key=lambda r: (utc(r.decided_at), r.revision))
            base = self._latest_verdict_row(s, decision.item_id, "model")
            if base is None:
                raise NotFound(f"item {decision.item_id!r} has no model verdict to review")
            if latest is new:
                final = self._review_verdict(Verdict.model_validate(base.verdict),
                                             _review_decision(new))
                s.add(VerdictRow(item_id=decision.item_id, kind="review",
                                 decision=final.decision.value, status=final.status.value,
                                 report=final.report, policy_version=final.policy_version,
                                 verdict=final.model_dump(mode="json"), created_at=now))
                # the training copy first, while the review copy is surely there
                self._retain_for_training(s, decision.item_id, decision.decided_at, written)
                expires = utc(decision.decided_at) + self.media_retention
                s.execute(update(MediaRow)
                          .where(MediaRow.item_id == decision.item_id,
                                 MediaRow.mime != TRAINING_CONTENT_MIME,
                                 MediaRow.purged_at.is_(None))
                          .values(expires_at=expires))
            else:
                current = self._final_verdict_row(s, decision.item_id)
                assert current is not None
                final = Verdict.model_validate(current.verdict)
            audit_log.append(s, actor, "review.decided", decision.item_id, {
                "revision": revision,
                "outcome": decision.outcome.value,
                "reviewer": decision.reviewer,
                "categories": cats,
                "decided_at": decision.decided_at,
                "task_id": decision.task_id,
                "annotation_id": decision.annotation_id,
                "final": latest is new,
                "final_decision": final.decision.value,
            })
            return final

    @staticmethod
    def _review_verdict(model: Verdict, d: ReviewDecision) -> Verdict:
        data = model.model_dump(mode="json")
        data.update(
            decision=d.decision.value,
            status=Status.OK.value,
            report=d.report,
            categories=[CategoryScore(code=c, score=1.0, decision=d.decision,
                                      rationale="decided by human review",
                                      source="review").model_dump(mode="json")
                        for c in d.categories] if d.decision is not Decision.ALLOW else [],
            rationale=f"human review: {d.outcome.value} (revision {d.revision})",
            model_versions={**model.model_versions, "review": f"revision {d.revision}"},
            created_at=utcnow().isoformat(),
        )
        return Verdict.model_validate(data)

    def reviewed_item_ids(self, since: datetime | None = None,
                          until: datetime | None = None) -> list[str]:
        """Ids of items with at least one review decision (decided in [since, until)), in
        order of their first decision."""
        with self._sessions() as s:
            q = select(ReviewDecisionRow.item_id, ReviewDecisionRow.decided_at)
            if since is not None:
                q = q.where(ReviewDecisionRow.decided_at >= utc(since))
            if until is not None:
                q = q.where(ReviewDecisionRow.decided_at < utc(until))
            seen: dict[str, None] = {}
            for item_id, _ in s.execute(q.order_by(ReviewDecisionRow.decided_at,
                                                   ReviewDecisionRow.id)):
                seen.setdefault(str(item_id), None)
            return list(seen)

    def review_history(self, item_id: str) -> list[ReviewDecision]:
        """Every decision on the item, oldest revision first."""
        with self._sessions() as s:
            rows = s.scalars(select(ReviewDecisionRow)
                             .where(ReviewDecisionRow.item_id == item_id)
                             .order_by(ReviewDecisionRow.revision)).all()
            return [_review_decision(r) for r in rows]

    def iter_verdict_rows(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Final-or-not verdict rows as dicts (kind, decision, report, created_at, verdict),
        oldest first: for reports that aggregate decisions."""
        with self._sessions() as s:
            q = select(VerdictRow).order_by(VerdictRow.id)
            if since is not None:
                q = q.where(VerdictRow.created_at >= utc(since))
            for r in s.scalars(q):
                yield {"item_id": r.item_id, "kind": r.kind, "decision": r.decision,
                       "status": r.status, "report": r.report,
                       "created_at": utc(r.created_at), "verdict": r.verdict}
