"""Video review on a real SQLite store and a real HashService: a video sent to review is shown
as its keyframe sheet (an image, served like any review image, so blurred and greyscale by the
review screen's style; the video itself is never served), a confirmed block adds the video's
vPDQ and file hashes to the review-confirmed bank (an edit of the clip then matches at once),
an overturn removes them, and after the retention period the video and its sheet are purged.

The clip is one of Meta's benign sample videos; "blocked" here is a test decision."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from childguard.hashing.service import HashService
from childguard.hashing.store import VPDQ
from childguard.policy import load_policy
from childguard.review_bridge.api import router
from childguard.review_bridge.bridge import ReviewBridge
from childguard.review_bridge.config import annotation_result
from childguard.review_bridge.decisions import REVIEW_BANK
from childguard.review_bridge.signing import media_url
from childguard.schema import CategoryScore, ContentItem, Decision, ReviewOutcome, Verdict
from childguard.serving.api import _video_review_media
from childguard.settings import Settings
from childguard.store import Store
from childguard.store.db import make_engine
from sample_media import sample_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOW = datetime.now(UTC).replace(microsecond=0)


def _video(name: str) -> bytes:
    return sample_video(name).read_bytes()


def _ann(ann_id: int, outcome: ReviewOutcome, minutes: int) -> dict[str, Any]:
    return {"id": ann_id, "completed_by": 7,
            "updated_at": (NOW + timedelta(minutes=minutes)).isoformat(),
            "result": annotation_result(outcome, ("sexual_minors",))}


def test_video_review_sheet_bank_and_purge(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home", policies_dir=REPO / "policies",
                             review={"label_studio_token": "0" * 40},
                             limits={"max_video_keyframes": 6})
    store = Store.from_settings(settings)
    hashes = HashService.from_settings(settings, make_engine(settings.db_url))
    pol = load_policy(settings.policies_dir / "child_safety")
    bridge = ReviewBridge.from_settings(settings, store, policy=pol, hash_service=hashes)
    try:
        video = _video("chair-orig-22-sd-bar")
        item = ContentItem(id="vid-1", text="placeholder text", video=video)
        verdict = Verdict(item_id="vid-1", decision=Decision.REVIEW, policy_id=pol.id,
                          policy_version=pol.version, categories=(CategoryScore(
                              code="sexual_minors", score=0.5, decision=Decision.REVIEW),))
        media = _video_review_media(item, verdict, settings.limits, 1.0)
        assert [m for _, m in media] == ["image/jpeg", "video/mp4"]
        store.save_verdict(item, verdict, actor="test", review_media=media)

        # the review image is the keyframe sheet; the video is kept but never served
        info = store.item_info("vid-1")
        kept = dict((mime, mid) for mid, mime in store.item_media("vid-1"))
        assert info.media_id == kept["image/jpeg"] and "video/mp4" in kept
        app = FastAPI()
        app.state.settings, app.state.store, app.state.review_bridge = settings, store, bridge
        app.include_router(router)
        client = TestClient(app)
        key = bridge.secrets.media_key
        r = client.get(media_url("", key, info.media_id, ttl_s=60))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        sheet = Image.open(io.BytesIO(r.content))
        assert sheet.width >= 320 and sheet.height >= 340  # at least one labelled tile
        assert client.get(media_url("", key, kept["video/mp4"], ttl_s=60)).status_code == 404

        # a confirmed block: the video's vPDQ (and file hashes) join the review bank
        task = {"id": 21, "data": {"item_id": "vid-1"}}
        res = bridge.decisions.handle(task, _ann(1, ReviewOutcome.BLOCK, 0), source="webhook")
        assert res.status == "recorded"
        bridge.decisions.follow_up(res)
        edit = hashes.hash_video_bytes(_video("chair-20-sd-bar"))
        hit = hashes.check_video(edit).decisive
        assert hit is not None and hit.bank == REVIEW_BANK and hit.signal_type == VPDQ
        exact = hashes.check_video(hashes.hash_video_bytes(video))
        assert {m.signal_type for m in exact.matches} == {"md5", "sha256", VPDQ}
        # overturned: removed again
        res2 = bridge.decisions.handle(task, _ann(1, ReviewOutcome.ALLOW, 5), source="webhook")
        bridge.decisions.follow_up(res2)
        assert hashes.check_video(edit).matches == ()

        # after the retention period nothing of the video is left (its hashes are in the
        # verdicts); only the reviewed text's training copy stays, under its own retention
        hours = settings.review.media_retention_hours
        assert store.purge_media(now=NOW + timedelta(hours=hours, minutes=10)) >= 2
        assert [m for _, m in store.item_media("vid-1")] == [
            "application/vnd.childguard.training-content"]
        assert store.get_media(kept["video/mp4"]) is None
        assert store.verify_audit().ok
    finally:
        bridge.close()
        store.close()
