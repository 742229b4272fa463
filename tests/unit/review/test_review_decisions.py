"""Annotations -> decisions on a real (SQLite) store: idempotent, history on changes, unknown
tasks ignored, the review bank fed and emptied; and the HTTP routes (webhook secret, media)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from review_unit_support import add_review_item, make_settings, png_bytes, policy

from childguard.review_bridge.api import router
from childguard.review_bridge.bridge import ReviewBridge
from childguard.review_bridge.config import annotation_result
from childguard.review_bridge.decisions import REVIEW_BANK
from childguard.review_bridge.signing import WEBHOOK_SECRET_HEADER, media_url
from childguard.schema import Decision, ReviewOutcome
from childguard.store import Store


class BankRecorder:
    """A reference HashService (the hashing contract's add/remove/ensure) that records calls."""

    def __init__(self) -> None:
        self.entries: dict[str, set[bytes]] = {}

    def ensure_bank(self, name: str, **_: Any) -> None:
        self.entries.setdefault(name, set())

    def add_bytes(self, bank: str, data: bytes, *, added_by: str,
                  metadata: dict[str, str] | None = None) -> list[str]:
        self.entries[bank].add(data)
        return ["e1"]

    def remove_bytes(self, bank: str, data: bytes, *, removed_by: str) -> int:
        had = data in self.entries.get(bank, set())
        self.entries.get(bank, set()).discard(data)
        return int(had)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    bank = BankRecorder()
    bridge = ReviewBridge.from_settings(settings, store, policy=policy(), hash_service=bank)
    bridge.decisions.reviewer_name = lambda uid: f"user{uid}@example.test"
    yield settings, store, bridge, bank
    bridge.close()


NOW = datetime.now(UTC).replace(microsecond=0)


def _at(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat()


def _ann(ann_id: int, outcome: ReviewOutcome, updated: str, cats: tuple[str, ...] = ()
         ) -> dict[str, Any]:
    return {"id": ann_id, "completed_by": 7, "updated_at": updated,
            "result": annotation_result(outcome, cats)}


def test_record_duplicate_change_and_late_delivery(env: Any) -> None:
    _, store, bridge, bank = env
    pol = bridge.policy
    image = png_bytes()
    add_review_item(store, pol, "item-1", image=image)
    task = {"id": 11, "data": {"item_id": "item-1"}}
    first = _ann(5, ReviewOutcome.BLOCK, _at(0), ("grooming",))
    res = bridge.decisions.handle(task, first, source="webhook")
    assert res.status == "recorded" and res.decision.revision == 1
    assert res.decision.reviewer == "user7@example.test"
    bridge.decisions.follow_up(res)
    assert bank.entries[REVIEW_BANK] == {image}
    assert bridge.decisions.handle(task, first, source="reconcile").status == "duplicate"

    changed = _ann(5, ReviewOutcome.ALLOW, _at(5))
    res2 = bridge.decisions.handle(task, changed, source="webhook")
    assert res2.status == "recorded" and res2.decision.revision == 2
    bridge.decisions.follow_up(res2)
    assert bank.entries[REVIEW_BANK] == set()  # overturned: hashes removed
    # the first delivery arriving late again changes nothing
    assert bridge.decisions.handle(task, first, source="webhook").status == "duplicate"
    hist = store.review_history("item-1")
    assert [(d.outcome, d.revision) for d in hist] == [(ReviewOutcome.BLOCK, 1),
                                                      (ReviewOutcome.ALLOW, 2)]
    assert store.get_verdict("item-1").decision is Decision.ALLOW
    assert store.verify_audit().ok


def test_ignored_annotations(env: Any) -> None:
    _, store, bridge, _ = env
    add_review_item(store, bridge.policy, "item-2")
    ok = _ann(1, ReviewOutcome.BLOCK, _at(0))
    cases = [
        ({"id": 1, "data": {}}, ok, "no item_id"),
        ({"id": 1, "data": {"item_id": "nope"}}, ok, "unknown item"),
        ({"id": 1, "data": {"item_id": "item-2"}}, {**ok, "was_cancelled": True}, "skipped"),
        ({"id": 1, "data": {"item_id": "item-2"}}, {**ok, "result": []}, "no 'decision'"),
    ]
    for task, ann, why in cases:
        res = bridge.decisions.handle(task, ann, source="webhook")
        assert res.status == "ignored" and why in res.reason
    assert store.review_history("item-2") == []


def _app(settings: Any, store: Store, bridge: ReviewBridge) -> TestClient:
    app = FastAPI()
    app.state.settings, app.state.store, app.state.review_bridge = settings, store, bridge
    app.include_router(router)
    return TestClient(app)


def test_webhook_secret_is_checked(env: Any) -> None:
    settings, store, bridge, _ = env
    add_review_item(store, bridge.policy, "item-3")
    client = _app(settings, store, bridge)
    body = {"action": "ANNOTATION_CREATED", "task": {"id": 3, "data": {"item_id": "item-3"}},
            "annotation": _ann(9, ReviewOutcome.BLOCK, _at(0))}
    for headers in ({}, {WEBHOOK_SECRET_HEADER: "wrong"}):
        assert client.post("/v1/review/webhook", json=body, headers=headers).status_code == 401
    assert store.review_history("item-3") == []
    good = {WEBHOOK_SECRET_HEADER: bridge.secrets.webhook_secret}
    assert client.post("/v1/review/webhook", content=b"{not json", headers=good).status_code == 400
    r = client.post("/v1/review/webhook", json=body, headers=good)
    assert r.status_code == 200 and r.json()["status"] == "recorded"
    r = client.post("/v1/review/webhook", json=body, headers=good)
    assert r.json()["status"] == "duplicate"
    assert len(store.review_history("item-3")) == 1


def test_media_endpoint_signature_expiry_and_retention(env: Any) -> None:
    settings, store, bridge, _ = env
    image = png_bytes(200)
    add_review_item(store, bridge.policy, "item-4", image=image)
    media_id = store.item_info("item-4").media_id
    client = _app(settings, store, bridge)
    key = bridge.secrets.media_key
    good = media_url("", key, media_id, ttl_s=60)
    r = client.get(good)
    assert r.status_code == 200 and r.content == image
    assert r.headers["x-content-type-options"] == "nosniff"
    expired = media_url("", key, media_id, ttl_s=-1)
    assert client.get(expired).status_code == 403
    assert client.get(good.replace("sig=", "sig=00")).status_code == 403
    assert client.get(f"/v1/media/{media_id}").status_code == 422  # no signature at all

    # retention: after the final decision and the retention period the image is gone (404)
    task = {"id": 4, "data": {"item_id": "item-4"}}
    bridge.decisions.handle(task, _ann(1, ReviewOutcome.ALLOW, _at(0)),
                            source="webhook")
    hours = settings.review.media_retention_hours
    assert store.purge_media(now=NOW + timedelta(hours=hours) - timedelta(seconds=1)) == 0
    assert client.get(media_url("", key, media_id, ttl_s=60)).status_code == 200
    assert store.purge_media(now=NOW + timedelta(hours=hours, seconds=1)) >= 1  # image (+text)
    assert client.get(media_url("", key, media_id, ttl_s=60)).status_code == 404
