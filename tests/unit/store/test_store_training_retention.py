"""Reviewed content kept for evaluation: copied at decision time, encrypted at rest, read only
with an actor (audited), kept past the review purge, purged on its own expiry (SQLite and
PostgreSQL)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from childguard.errors import UserError
from childguard.schema import (
    ContentItem,
    Decision,
    Message,
    ReviewDecision,
    ReviewOutcome,
    Verdict,
)
from childguard.store import Store
from childguard.store.core import TRAINING_CONTENT_MIME
from childguard.store.db import make_engine
from childguard.store.migrate import migrate

TEXT = "a benign question about a school trip"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
DECIDED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def kept(db_url: str, tmp_path: Path) -> Iterator[Store]:
    """A store that retains reviewed content for 30 days (review media for 24 hours)."""
    engine = make_engine(db_url)
    migrate(engine)
    s = Store(engine, media_dir=tmp_path / "media", media_retention_hours=24.0,
              training_retention_days=30.0, training_key=tmp_path / "keys" / "t.key")
    try:
        yield s
    finally:
        s.close()


def _review(store: Store, item_id: str, *, text: str | None = TEXT,
            image: bytes | None = None) -> None:
    store.save_verdict(ContentItem(id=item_id, text=text, image=image,
                                   context=[Message(author="a", text="earlier message")]
                                   if text else []),
                       Verdict(item_id=item_id, decision=Decision.REVIEW), actor="p")


def _decide(store: Store, item_id: str, outcome: ReviewOutcome, at: datetime) -> None:
    store.record_review_decision(ReviewDecision(item_id=item_id, outcome=outcome, reviewer="r",
                                                decided_at=at), actor="rb")


def test_content_outlives_the_review_purge_and_goes_at_its_own_expiry(kept: Store,
                                                                      tmp_path: Path) -> None:
    _review(kept, "t-1", image=PNG)
    _decide(kept, "t-1", ReviewOutcome.BLOCK, DECIDED)
    got = kept.training_content(["t-1", "unknown"], actor="eval:test", now=DECIDED)
    assert got["unknown"] is None
    assert got["t-1"] == {"text": TEXT, "context": [
        {"author": "a", "text": "earlier message", "sent_at": None}]}

    # encrypted at rest: no file in the media area holds the text; the key is 0600
    files = list((tmp_path / "media").iterdir())
    training = [p for p in files if TEXT.encode() not in p.read_bytes()]
    assert training, "the training copy must not be plaintext"
    key = tmp_path / "keys" / "t.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # the review copy and the image go after 24 hours; the training copy stays
    assert kept.purge_media(DECIDED + timedelta(hours=25)) == 2
    assert kept.review_content("t-1") is None
    got = kept.training_content(["t-1"], actor="eval:test", now=DECIDED + timedelta(days=2))
    assert got["t-1"] is not None and got["t-1"]["text"] == TEXT
    # images are never kept for training: one file is left, the encrypted text
    left = list((tmp_path / "media").iterdir())
    assert len(left) == 1 and PNG not in left[0].read_bytes()

    # after 30 days it is purged, audited, and reads say None
    assert kept.purge_media(DECIDED + timedelta(days=30, seconds=1)) == 1
    assert not list((tmp_path / "media").iterdir())
    assert kept.training_content(["t-1"], actor="eval:test")["t-1"] is None
    actions = [e.action for e in kept.audit_tail(50)]
    assert "training_content.retained" in actions
    assert actions.count("training_content.read") == 3
    assert "media.purged" in actions
    assert kept.verify_audit().ok


def test_reads_are_audited_with_the_actor_and_need_one(kept: Store) -> None:
    _review(kept, "t-2")
    _decide(kept, "t-2", ReviewOutcome.ALLOW, DECIDED)
    with pytest.raises(UserError, match="actor"):
        kept.training_content(["t-2"], actor="")
    kept.training_content(["t-2"], actor="eval:alice", now=DECIDED)
    event = kept.audit_tail(1)[0]
    assert event.action == "training_content.read" and event.actor == "eval:alice"
    assert event.payload["item_ids"] == ["t-2"] and event.payload["asked"] == 1


def test_a_changed_decision_extends_retention_without_a_second_copy(kept: Store,
                                                                    tmp_path: Path) -> None:
    _review(kept, "t-3")
    _decide(kept, "t-3", ReviewOutcome.BLOCK, DECIDED)
    _decide(kept, "t-3", ReviewOutcome.ALLOW, DECIDED + timedelta(days=10))
    from sqlalchemy import select

    from childguard.store.models import MediaRow

    with kept._sessions() as s:  # the rows are what this test is about
        rows = s.scalars(select(MediaRow).where(MediaRow.item_id == "t-3",
                                                MediaRow.mime == TRAINING_CONTENT_MIME)).all()
        assert len(rows) == 1
        assert rows[0].expires_at is not None
    # retention runs from the latest decision: still there at day 35, gone after day 40
    assert kept.purge_media(DECIDED + timedelta(days=35)) == 1  # only the review copy
    assert kept.training_content(["t-3"], actor="e", now=DECIDED + timedelta(days=35))["t-3"]
    assert kept.purge_media(DECIDED + timedelta(days=40, seconds=1)) == 1


def test_retention_off_keeps_nothing_and_a_missing_key_is_explained(store: Store,
                                                                    tmp_path: Path) -> None:
    _review(store, "t-4")  # the shared fixture: training retention 0 (off)
    _decide(store, "t-4", ReviewOutcome.BLOCK, DECIDED)
    assert store.training_content(["t-4"], actor="e")["t-4"] is None
    engine = store.engine
    other = Store(engine, media_dir=tmp_path / "m2", training_retention_days=1.0,
                  training_key=tmp_path / "nokey" / "k")
    _review(other, "t-5")
    _decide(other, "t-5", ReviewOutcome.BLOCK, datetime.now(UTC))
    (tmp_path / "nokey" / "k").unlink()
    with pytest.raises(UserError, match="no training-content key"):
        other.training_content(["t-5"], actor="e")


def test_items_without_text_keep_nothing(kept: Store, tmp_path: Path) -> None:
    _review(kept, "t-6", text=None, image=PNG)
    _decide(kept, "t-6", ReviewOutcome.BLOCK, DECIDED)
    assert kept.training_content(["t-6"], actor="e", now=DECIDED)["t-6"] is None
    assert kept.item_info("t-6").hashes.get("image_sha256")  # its hashes remain


def test_a_failed_decision_leaves_no_training_file(kept: Store, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from childguard.store import verdicts

    _review(kept, "t-7")
    files_before = set((tmp_path / "media").iterdir())
    real = verdicts.audit_log.append

    def failing(s, actor, action, subject, payload):  # type: ignore[no-untyped-def]
        if action == "review.decided":
            raise RuntimeError("the database went away")
        return real(s, actor, action, subject, payload)

    monkeypatch.setattr(verdicts.audit_log, "append", failing)
    with pytest.raises(RuntimeError):
        _decide(kept, "t-7", ReviewOutcome.BLOCK, DECIDED)
    monkeypatch.setattr(verdicts.audit_log, "append", real)
    assert set((tmp_path / "media").iterdir()) == files_before  # the copy was removed again
    assert kept.review_history("t-7") == []
    assert kept.training_content(["t-7"], actor="e")["t-7"] is None
