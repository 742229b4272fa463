"""`Store`: the one object that writes and reads verdicts, reviews, outbox, audit, keys, media.

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

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, func, or_, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from childguard.errors import DependencyError, NotFound, UserError
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
from childguard.store import keys as keymod
from childguard.store.audit import AuditEvent, AuditReport
from childguard.store.db import make_engine, session_factory, transaction
from childguard.store.keys import ApiKeyInfo
from childguard.store.media import MediaArea, new_media_id, normalise_mime
from childguard.store.migrate import migrate
from childguard.store.models import (
    ApiKeyRow,
    ItemRow,
    MediaRow,
    OutboxRow,
    ReviewDecisionRow,
    VerdictRow,
    utc,
    utc_opt,
    utcnow,
)
from childguard.store.roles import Role

if TYPE_CHECKING:
    from childguard.settings import Settings

log = logging.getLogger(__name__)

OUTBOX_REVIEW_TASK = "review_task"
#: media type of the text + context kept for the reviewer (a file in the media area, never a row)
REVIEW_CONTENT_MIME = "application/vnd.childguard.review-content+json"
#: how often `last_used_at` of a key is written (a write per request would serialise SQLite)
LAST_USED_RESOLUTION = timedelta(seconds=60)


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


@dataclass(frozen=True)
class OutboxItem:
    """A claimed unit of outbox work (lease until `claimed_until`)."""

    id: int
    item_id: str
    kind: str
    attempts: int
    created_at: datetime
    claimed_until: datetime | None = None
    last_error: str | None = None
    task_ref: str | None = None


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of checking a presented key: `info` is set only when `reason == 'ok'`."""

    reason: str  # ok | malformed | unknown | revoked
    info: ApiKeyInfo | None = None
    prefix: str | None = None
    revoked_at: datetime | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _key_info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=row.id, name=row.name, role=Role(row.role), prefix=row.prefix,
                      created_at=utc(row.created_at), created_by=row.created_by,
                      revoked_at=utc_opt(row.revoked_at), last_used_at=utc_opt(row.last_used_at))


def _outbox_item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(id=row.id, item_id=row.item_id, kind=row.kind, attempts=row.attempts,
                      created_at=utc(row.created_at), claimed_until=utc_opt(row.claimed_until),
                      last_error=row.last_error, task_ref=row.task_ref)


def _review_decision(row: ReviewDecisionRow) -> ReviewDecision:
    return ReviewDecision(item_id=row.item_id, outcome=ReviewOutcome(row.outcome),
                          reviewer=row.reviewer, categories=tuple(row.categories or ()),
                          comment=row.comment or "", decided_at=utc(row.decided_at),
                          task_id=row.task_id, annotation_id=row.annotation_id,
                          revision=row.revision)


class Store:
    """Verdicts, review decisions, outbox, audit log, API keys and review media."""

    def __init__(self, engine: Engine, *, media_dir: Path | None = None,
                 media_retention_hours: float = 72.0, outbox_lease_s: float = 300.0) -> None:
        if media_retention_hours <= 0:
            raise UserError(f"media_retention_hours must be > 0; received {media_retention_hours}")
        self._engine = engine
        self._sessions: sessionmaker[Session] = session_factory(engine)
        self._media = MediaArea(media_dir) if media_dir is not None else None
        self.media_retention = timedelta(hours=media_retention_hours)
        self.outbox_lease = timedelta(seconds=outbox_lease_s)
        self._pg = engine.dialect.name == "postgresql"

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
                   media_retention_hours=settings.review.media_retention_hours)

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

    # -- verdicts ---------------------------------------------------------------------------
    def save_verdict(self, item: ContentItem, verdict: Verdict, *, actor: str,
                     hashes: dict[str, str] | None = None) -> None:
        """Item row + verdict + audit event (+ outbox row and review media) in one transaction.

        For an item sent to review, the reviewer must see it: its image and its text (with the
        conversation context) go to the restricted media area, deleted a retention period after
        the final decision (`review_content`, `get_media`). Database rows keep hashes only.
        `hashes` (optional) adds hashes computed elsewhere: the hash stage's (`image_md5`,
        `image_sha256`, `pdq`, `Verdict.image_hashes()`), which are used as given instead of
        hashing the image again.
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
                                   sha256=row.image_sha256 or _sha256(item.image),
                                   created_at=utcnow()))
                    row.media_id = media_id
                elif needs_review and item.image_ref and row.media_id is None:
                    ref = s.get(MediaRow, item.image_ref)
                    if ref is not None and ref.purged_at is None:
                        row.media_id = ref.id
                if content_id is not None:
                    s.add(MediaRow(id=content_id, item_id=item.id, mime=REVIEW_CONTENT_MIME,
                                   size=len(content_blob), sha256=_sha256(content_blob),
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
                    "verdict_sha256": _sha256(audit_log.canonical_json(verdict_json).encode()),
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
            row.text_sha256 = _sha256(item.text.encode("utf-8"))
            row.text_chars = len(item.text)
            hashes["text_sha256"] = row.text_sha256
        if item.image is not None:
            given = extra or {}
            row.image_sha256 = given.get("image_sha256") or _sha256(item.image)
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

    def _enqueue(self, s: Session, item_id: str, kind: str) -> None:
        """One outbox row per (item, kind): a re-classified item does not become a second task."""
        existing = s.scalar(select(OutboxRow.id).where(OutboxRow.item_id == item_id,
                                                       OutboxRow.kind == kind))
        if existing is None:
            now = utcnow()
            s.add(OutboxRow(item_id=item_id, kind=kind, status="pending", attempts=0,
                            next_attempt_at=now, created_at=now))
            s.flush()

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
        overriding a newer decision. Media retention restarts from the final decision time.
        """
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
                expires = utc(decision.decided_at) + self.media_retention
                s.execute(update(MediaRow)
                          .where(MediaRow.item_id == decision.item_id,
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

    def review_history(self, item_id: str) -> list[ReviewDecision]:
        """Every decision on the item, oldest revision first."""
        with self._sessions() as s:
            rows = s.scalars(select(ReviewDecisionRow)
                             .where(ReviewDecisionRow.item_id == item_id)
                             .order_by(ReviewDecisionRow.revision)).all()
            return [_review_decision(r) for r in rows]

    # -- outbox -----------------------------------------------------------------------------
    def claim_outbox(self, limit: int, now: datetime | None = None) -> list[OutboxItem]:
        """Lease up to `limit` due rows (pending and due, or with an expired lease)."""
        if limit <= 0:
            return []
        now = utc(now) if now is not None else utcnow()
        due = or_(and_(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= now),
                  and_(OutboxRow.status == "claimed", OutboxRow.claimed_until <= now))
        claimed: list[OutboxItem] = []
        with self._tx() as s:
            self._write_lock(s)
            q = (select(OutboxRow.id).where(due)
                 .order_by(OutboxRow.next_attempt_at, OutboxRow.id).limit(limit))
            if self._pg:
                q = q.with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            for oid in ids:
                res = s.execute(update(OutboxRow).where(OutboxRow.id == oid, due)
                                .values(status="claimed", claimed_until=now + self.outbox_lease,
                                        attempts=OutboxRow.attempts + 1)
                                .execution_options(synchronize_session=False))
                if getattr(res, "rowcount", 0) == 1:
                    row = s.get(OutboxRow, oid, populate_existing=True)
                    if row is not None:
                        claimed.append(_outbox_item(row))
        return claimed

    def outbox_done(self, outbox_id: int, task_ref: str, *, actor: str = "review-bridge") -> None:
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(OutboxRow, outbox_id, with_for_update=self._pg)
            if row is None:
                raise NotFound(f"no outbox row {outbox_id}")
            if row.status == "done" and row.task_ref == task_ref:
                return
            row.status, row.task_ref, row.done_at = "done", task_ref, utcnow()
            row.claimed_until, row.last_error = None, None
            audit_log.append(s, actor, "outbox.done", row.item_id,
                             {"outbox_id": outbox_id, "kind": row.kind, "task_ref": task_ref,
                              "attempts": row.attempts})

    def outbox_failed(self, outbox_id: int, error: str, retry_at: datetime) -> None:
        """Put a claimed row back, due again at `retry_at` (the worker's backoff)."""
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(OutboxRow, outbox_id, with_for_update=self._pg)
            if row is None:
                raise NotFound(f"no outbox row {outbox_id}")
            if row.status == "done":
                return  # a late failure report must not resurrect finished work
            row.status, row.next_attempt_at = "pending", utc(retry_at)
            row.claimed_until, row.last_error = None, error[:2000]

    def outbox_stats(self, now: datetime | None = None) -> dict[str, Any]:
        """depth (not done), per-status counts, retrying (failed at least once), oldest age."""
        now = utc(now) if now is not None else utcnow()
        with self._sessions() as s:
            counts = {str(st): int(n) for st, n in s.execute(
                select(OutboxRow.status, func.count()).group_by(OutboxRow.status))}
            retrying = s.scalar(select(func.count()).where(OutboxRow.status == "pending",
                                                           OutboxRow.last_error.is_not(None)))
            oldest = s.scalar(select(func.min(OutboxRow.created_at))
                              .where(OutboxRow.status != "done"))
        pending, claimed = int(counts.get("pending", 0)), int(counts.get("claimed", 0))
        return {
            "depth": pending + claimed,
            "pending": pending,
            "claimed": claimed,
            "done": int(counts.get("done", 0)),
            "retrying": int(retrying or 0),
            "oldest_age_s": max(0.0, (now - utc(oldest)).total_seconds()) if oldest else 0.0,
        }

    # -- audit ------------------------------------------------------------------------------
    def append_audit(self, actor: str, action: str, subject: str,
                     payload: dict[str, Any]) -> None:
        with self._tx() as s:
            self._write_lock(s)
            audit_log.append(s, actor, action, subject, payload)

    def verify_audit(self) -> AuditReport:
        with self._sessions() as s, s.begin():
            return audit_log.verify(s)

    def audit_tail(self, n: int = 20) -> list[AuditEvent]:
        with self._sessions() as s:
            return audit_log.tail(s, n)

    # -- API keys ---------------------------------------------------------------------------
    def create_key(self, name: str, role: Role | str, *, actor: str = "system") -> tuple[str, str]:
        """A new key: returns (key id, secret). The secret is not stored and cannot be shown
        again."""
        name = name.strip()
        if not name or len(name) > 128:
            raise UserError(f"key name must be 1 to 128 characters; received {len(name)}")
        try:
            role = role if isinstance(role, Role) else Role.parse(role)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        new = keymod.new_key()
        with self._tx() as s:
            self._write_lock(s)
            s.add(ApiKeyRow(id=new.key_id, name=name, role=role.value, prefix=new.prefix,
                            salt=new.salt, secret_hash=new.secret_hash, created_by=actor,
                            created_at=utcnow()))
            audit_log.append(s, actor, "key.created", new.key_id,
                             {"name": name, "role": role.value, "prefix": new.prefix})
        return new.key_id, new.secret

    def check_key(self, secret: str | None) -> KeyCheck:
        """Why a presented key is (not) accepted; records last use (at most once a minute)."""
        prefix = keymod.parse_prefix(secret or "")
        if secret is None or prefix is None:
            return KeyCheck("malformed")
        with self._sessions() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
            if row is None or not keymod.matches(row.salt, row.secret_hash, secret):
                return KeyCheck("unknown", prefix=prefix)
            info = _key_info(row)
        if info.revoked_at is not None:
            return KeyCheck("revoked", prefix=prefix, revoked_at=info.revoked_at)
        now = utcnow()
        if info.last_used_at is None or now - info.last_used_at > LAST_USED_RESOLUTION:
            try:
                with self._tx() as s:
                    s.execute(update(ApiKeyRow).where(ApiKeyRow.id == info.key_id)
                              .values(last_used_at=now))
            except OperationalError as exc:  # bookkeeping must not fail a request
                log.warning("could not record last use of key %s: %s", info.key_id,
                            type(exc).__name__)
        return KeyCheck("ok", info=info, prefix=prefix)

    def authenticate(self, secret: str) -> ApiKeyInfo | None:
        """The key's info if `secret` is a known, unrevoked key; else None."""
        return self.check_key(secret).info

    def revoke_key(self, key_id: str, *, actor: str = "system") -> bool:
        """Revoke by key id (or its `cg_<id>` prefix). False if no such active key."""
        kid = key_id.removeprefix(f"{keymod.KEY_PREFIX}_")
        with self._tx() as s:
            self._write_lock(s)
            row = s.get(ApiKeyRow, kid, with_for_update=self._pg)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            audit_log.append(s, actor, "key.revoked", kid, {"name": row.name, "role": row.role})
            return True

    def get_key(self, key_id: str) -> ApiKeyInfo | None:
        with self._sessions() as s:
            row = s.get(ApiKeyRow, key_id.removeprefix(f"{keymod.KEY_PREFIX}_"))
            return None if row is None else _key_info(row)

    def list_keys(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        with self._sessions() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [_key_info(r) for r in s.scalars(q)]

    # -- media ------------------------------------------------------------------------------
    def _media_area(self) -> MediaArea:
        if self._media is None:
            raise UserError("this store has no media directory; build it with "
                            "Store.from_settings(settings) or Store(engine, media_dir=...)")
        return self._media

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
                               sha256=_sha256(data), created_at=utcnow()))
                item = s.get(ItemRow, item_id)
                if item is not None and item.media_id is None:
                    item.media_id = media_id
                audit_log.append(s, actor, "media.stored", item_id,
                                 {"media_id": media_id, "size": len(data),
                                  "sha256": _sha256(data)})
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
