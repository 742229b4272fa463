"""The review media area: restricted files, retention after the final decision, purge."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from childguard.errors import UserError
from childguard.schema import ContentItem, Decision, ReviewDecision, ReviewOutcome, Verdict
from childguard.store import Store

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_store_media_retention_after_final_decision(store: Store, media_dir: Path) -> None:
    store.save_verdict(ContentItem(id="m-1", image=PNG),
                       Verdict(item_id="m-1", decision=Decision.REVIEW), actor="p")
    media_id = store.item_info("m-1").media_id
    assert media_id is not None
    path = media_dir / media_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(media_dir.stat().st_mode) == 0o700
    assert store.get_media(media_id) == (PNG, "image/png")
    assert store.media_expiry(media_id) is None
    far = datetime.now(UTC) + timedelta(days=365)
    assert store.purge_media(far) == 0  # no final decision yet: kept however long it takes

    decided = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    store.record_review_decision(ReviewDecision(item_id="m-1", outcome=ReviewOutcome.BLOCK,
                                                reviewer="r", decided_at=decided), actor="rb")
    expiry = decided + timedelta(hours=24)  # the fixture's media_retention_hours
    assert store.media_expiry(media_id) == expiry
    assert store.purge_media(expiry - timedelta(seconds=1)) == 0
    assert store.get_media(media_id, now=expiry - timedelta(seconds=1)) is not None
    assert store.purge_media(expiry + timedelta(seconds=1)) == 1
    assert not path.exists()
    assert store.get_media(media_id) is None
    assert store.purge_media(expiry + timedelta(days=1)) == 0  # already purged
    assert store.audit_tail(1)[0].action == "media.purged"
    assert store.verify_audit().ok


def test_store_media_changed_decision_restarts_retention(store: Store) -> None:
    store.save_verdict(ContentItem(id="m-2", image=PNG),
                       Verdict(item_id="m-2", decision=Decision.REVIEW), actor="p")
    media_id = store.item_info("m-2").media_id
    assert media_id is not None
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    for minutes, outcome in ((0, ReviewOutcome.BLOCK), (90, ReviewOutcome.ALLOW)):
        store.record_review_decision(ReviewDecision(
            item_id="m-2", outcome=outcome, reviewer="r",
            decided_at=t0 + timedelta(minutes=minutes)), actor="rb")
    assert store.media_expiry(media_id) == t0 + timedelta(minutes=90, hours=24)


def test_store_put_media_and_validation(store: Store) -> None:
    media_id = store.put_media("m-3", PNG, "image/png; charset=binary")
    assert store.get_media(media_id) == (PNG, "image/png")
    assert store.get_media("0" * 32) is None
    assert store.get_media("../../etc/passwd") is None
    with pytest.raises(UserError, match="not accepted"):
        store.put_media("m-3", PNG, "text/html")
    with pytest.raises(UserError, match="0 bytes"):
        store.put_media("m-3", b"", "image/png")


def test_store_without_media_dir_says_so(store: Store) -> None:
    bare = Store(store.engine)
    with pytest.raises(UserError, match="no media directory"):
        bare.put_media("x", PNG, "image/png")


def test_store_review_content_kept_for_reviewer_until_retention(store: Store,
                                                                media_dir: Path) -> None:
    from childguard.schema import Message

    item = ContentItem(id="m-4", text="a benign question about homework",
                       context=(Message(author="sender", text="hi there"),))
    store.save_verdict(item, Verdict(item_id="m-4", decision=Decision.REVIEW), actor="p")
    content = store.review_content("m-4")
    assert content is not None and content["text"] == "a benign question about homework"
    assert [(m["author"], m["text"]) for m in content["context"]] == [("sender", "hi there")]
    files = list(media_dir.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert store.item_info("m-4").media_id is None  # media_id names the image only

    # an allowed item keeps nothing
    store.save_verdict(ContentItem(id="m-5", text="fine"),
                       Verdict(item_id="m-5", decision=Decision.ALLOW), actor="p")
    assert store.review_content("m-5") is None and len(list(media_dir.iterdir())) == 1

    decided = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    store.record_review_decision(ReviewDecision(item_id="m-4", outcome=ReviewOutcome.ALLOW,
                                                reviewer="r", decided_at=decided), actor="rb")
    assert store.purge_media(decided + timedelta(hours=24, seconds=1)) == 1
    assert store.review_content("m-4") is None and list(media_dir.iterdir()) == []
