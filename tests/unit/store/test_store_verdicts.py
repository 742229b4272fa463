"""Verdict writes: one transaction, no raw content, final verdict, review history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select, text
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
    error_verdict,
)
from childguard.store import Store
from childguard.store.models import AuditRow, ItemRow, MediaRow, OutboxRow, VerdictRow

# benign, distinctive marker strings: the test checks they never reach the database
TEXT = "marker-text-7f3a: what time does the library open on sundays?"
IMAGE = b"\x89PNG\r\n\x1a\n" + b"marker-image-bytes-91c2" * 20


def _count(store: Store, model: type) -> int:
    with Session(store.engine) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _review_verdict(item_id: str) -> Verdict:
    return Verdict(item_id=item_id, decision=Decision.REVIEW, policy_id="child_safety",
                   policy_version="v1", rationale="uncertain",
                   categories=(CategoryScore(code="grooming", score=0.55,
                                             decision=Decision.REVIEW),))


def test_store_save_verdict_writes_all_rows_without_raw_content(store: Store) -> None:
    item = ContentItem(id="it-1", text=TEXT, image=IMAGE, source="chat", external_id="ext-9",
                       callback_url="http://127.0.0.1:9/cb")
    store.save_verdict(item, _review_verdict("it-1"), actor="pipeline",
                       hashes={"pdq": "ab" * 32})

    assert store.get_verdict("it-1") == _review_verdict("it-1").model_copy(
        update={"created_at": store.get_verdict("it-1").created_at})  # type: ignore[union-attr]
    info = store.item_info("it-1")
    assert (info.source, info.external_id, info.callback_url) == ("chat", "ext-9",
                                                                 "http://127.0.0.1:9/cb")
    assert info.hashes["pdq"] == "ab" * 32 and len(info.hashes["text_sha256"]) == 64
    assert info.media_id is not None and info.outbox_status == "pending"
    assert _count(store, VerdictRow) == 1 and _count(store, OutboxRow) == 1
    assert _count(store, AuditRow) == 1 and _count(store, MediaRow) == 2  # image + text
    assert store.review_content("it-1") == {"text": TEXT, "context": []}

    # raw content is nowhere in the database (every column of every table, as text)
    with store.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                dump = " ".join(str(v) for v in row)
                assert "marker-text-7f3a" not in dump, table
                assert "marker-image-bytes" not in dump, table


def test_store_allow_verdict_has_no_outbox_or_media(store: Store) -> None:
    item = ContentItem(id="it-2", text=TEXT, image=IMAGE)
    store.save_verdict(item, Verdict(item_id="it-2", decision=Decision.ALLOW), actor="p")
    assert _count(store, OutboxRow) == 0 and _count(store, MediaRow) == 0
    assert store.item_info("it-2").media_id is None


def test_store_failure_inside_rolls_back_verdict_audit_outbox_and_media(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save_verdict(ContentItem(id="before", text=TEXT),
                       Verdict(item_id="before", decision=Decision.ALLOW), actor="p")
    original = Store._enqueue

    def enqueue_then_fail(self: Store, s: Session, item_id: str, kind: str) -> None:
        original(self, s, item_id, kind)  # the outbox row is flushed ...
        raise RuntimeError("simulated crash after the outbox write")  # ... then we fail

    monkeypatch.setattr(Store, "_enqueue", enqueue_then_fail)
    item = ContentItem(id="it-3", text=TEXT, image=IMAGE)
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.save_verdict(item, _review_verdict("it-3"), actor="p")

    assert store.get_verdict("it-3") is None
    with pytest.raises(NotFound):
        store.item_info("it-3")
    assert _count(store, VerdictRow) == 1 and _count(store, OutboxRow) == 0
    assert _count(store, AuditRow) == 1 and _count(store, MediaRow) == 0
    assert store._media is not None and not any(store._media.root.iterdir())  # file removed
    assert store.verify_audit().ok
    monkeypatch.setattr(Store, "_enqueue", original)
    store.save_verdict(item, _review_verdict("it-3"), actor="p")  # and the retry works
    assert store.verify_audit().rows == 2


def test_store_rejects_mismatched_item_and_verdict(store: Store) -> None:
    with pytest.raises(UserError, match="verdict is for item"):
        store.save_verdict(ContentItem(id="a", text=TEXT),
                           Verdict(item_id="b", decision=Decision.ALLOW), actor="p")


def test_store_reclassified_review_item_is_one_outbox_row(store: Store) -> None:
    item = ContentItem(id="it-4", text=TEXT)
    store.save_verdict(item, error_verdict("it-4", "judge", "timeout"), actor="p")
    store.save_verdict(item, _review_verdict("it-4"), actor="p")
    assert _count(store, OutboxRow) == 1 and _count(store, VerdictRow) == 2
    assert store.get_verdict("it-4").status is Status.OK  # type: ignore[union-attr]


def test_store_review_decisions_keep_history_and_override(store: Store) -> None:
    store.save_verdict(ContentItem(id="it-5", text=TEXT), _review_verdict("it-5"), actor="p")
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    first = ReviewDecision(item_id="it-5", outcome=ReviewOutcome.BLOCK, reviewer="rev-a",
                           categories=("grooming",), decided_at=t0, annotation_id="an-1")
    v1 = store.record_review_decision(first, actor="review-bridge")
    assert v1.decision is Decision.BLOCK and v1.score_of("grooming") == 1.0
    assert store.get_verdict("it-5") == v1

    # the same webhook delivered twice: no new history entry
    assert store.record_review_decision(first, actor="review-bridge") == v1
    # the reviewer changes their mind
    second = ReviewDecision(item_id="it-5", outcome=ReviewOutcome.ALLOW, reviewer="rev-a",
                            decided_at=t0 + timedelta(minutes=5), annotation_id="an-1")
    v2 = store.record_review_decision(second, actor="review-bridge")
    assert v2.decision is Decision.ALLOW and v2.categories == () and not v2.report
    # a late delivery of an older, different decision joins the history, final unchanged
    stale = ReviewDecision(item_id="it-5", outcome=ReviewOutcome.ESCALATE, reviewer="rev-b",
                           decided_at=t0 + timedelta(minutes=1), annotation_id="an-2")
    assert store.record_review_decision(stale, actor="review-bridge") == v2

    history = store.review_history("it-5")
    assert [(d.revision, d.outcome) for d in history] == [
        (1, ReviewOutcome.BLOCK), (2, ReviewOutcome.ALLOW), (3, ReviewOutcome.ESCALATE)]
    assert store.get_verdict("it-5") == v2
    model = store.get_model_verdict("it-5")
    assert model is not None and model.decision is Decision.REVIEW
    actions = [e.action for e in store.audit_tail(10)]
    assert actions == ["verdict.saved", "review.decided", "review.decided", "review.decided"]
    assert store.verify_audit().ok


def test_store_escalation_sets_report_and_unknown_item_is_not_found(store: Store) -> None:
    store.save_verdict(ContentItem(id="it-6", text=TEXT), _review_verdict("it-6"), actor="p")
    v = store.record_review_decision(
        ReviewDecision(item_id="it-6", outcome=ReviewOutcome.ESCALATE, reviewer="r",
                       categories=("sextortion",)), actor="rb")
    assert v.decision is Decision.BLOCK and v.report
    with pytest.raises(NotFound, match="unknown item"):
        store.record_review_decision(
            ReviewDecision(item_id="nope", outcome=ReviewOutcome.ALLOW, reviewer="r"), actor="rb")
    with pytest.raises(NotFound):
        store.item_info("nope")
    assert store.get_verdict("nope") is None


def test_store_item_row_keeps_hashes_only(store: Store) -> None:
    store.save_verdict(ContentItem(id="it-7", text=TEXT),
                       Verdict(item_id="it-7", decision=Decision.ALLOW), actor="p")
    with Session(store.engine) as s:
        row = s.get(ItemRow, "it-7")
        assert row is not None and row.text_chars == len(TEXT)
        assert row.text_sha256 is not None and len(row.text_sha256) == 64


def test_store_iter_verdict_rows_lists_model_and_review_rows(store: Store) -> None:
    store.save_verdict(ContentItem(id="it-8", text=TEXT), _review_verdict("it-8"), actor="p")
    store.save_verdict(ContentItem(id="it-9", text=TEXT),
                       Verdict(item_id="it-9", decision=Decision.ALLOW), actor="p")
    store.record_review_decision(ReviewDecision(item_id="it-8", outcome=ReviewOutcome.BLOCK,
                                                reviewer="r"), actor="rb")
    rows = list(store.iter_verdict_rows())
    assert [(r["item_id"], r["kind"], r["decision"]) for r in rows] == [
        ("it-8", "model", "review"), ("it-9", "model", "allow"), ("it-8", "review", "block")]
    assert all(r["created_at"].tzinfo is not None for r in rows)
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(store.iter_verdict_rows(since=future)) == []


def test_store_keeps_the_hash_stages_hashes_without_hashing_again(store: Store) -> None:
    from childguard.schema import Signal

    stage = {"md5": "0" * 32, "sha256": "1" * 64, "pdq": "f" * 64, "pdq_quality": 90}
    verdict = _review_verdict("it-h").model_copy(update={"signals": (
        Signal(name="hash", detail={**stage, "matches": 0, "note": ""}),)})
    hashes = verdict.image_hashes()
    assert hashes == {"image_md5": "0" * 32, "image_sha256": "1" * 64, "pdq": "f" * 64,
                      "pdq_quality": "90"}
    store.save_verdict(ContentItem(id="it-h", image=IMAGE), verdict, actor="p", hashes=hashes)
    info = store.item_info("it-h")
    # the values the stage computed, not a second hash of the bytes (which would differ here)
    assert info.hashes["image_sha256"] == "1" * 64 and info.hashes["image_md5"] == "0" * 32
    assert info.hashes["pdq"] == "f" * 64
    assert _review_verdict("x").image_hashes() == {}
