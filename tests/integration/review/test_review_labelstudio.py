"""The review loop end to end against a real Label Studio: classify through the service, see
tasks with pre-annotations and the wellness style, annotate through Label Studio's API as a
reviewer would, and see the decisions in the store, the audit log and the callback receiver."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from review_support import KODAK, ReviewEnv, review_item, wait_until

from childguard.review_bridge.config import (
    DECISION_FIELD,
    MODEL_VERSION,
    SUGGESTION_FIELD,
    annotation_result,
)
from childguard.review_bridge.signing import (
    SIGNATURE_HEADER,
    WEBHOOK_SECRET_HEADER,
    verify_callback,
)
from childguard.schema import Decision, ReviewOutcome

pytestmark = pytest.mark.integration


def _kodak() -> bytes:
    path = KODAK / "kodim03.png"
    if not path.is_file():
        pytest.skip(f"benign Kodak test photo missing at {path} (see ../shared/datasets)")
    return path.read_bytes()


def _by_item(env: ReviewEnv) -> dict[str, dict]:
    return {t["data"]["item_id"]: t for t in env.tasks()}


def test_items_become_tasks_and_decisions_come_back(review_env: ReviewEnv) -> None:
    env = review_env
    image = _kodak()
    verdicts = env.classify([
        review_item(1, callback=env.callbacks.url, score=0.5),
        review_item(2, callback=env.callbacks.url, image=image, category="sexual_minors",
                    score=0.8),
        review_item(3, score=0.01),  # clearly allowed: never becomes a task
    ])  # fmt: skip
    assert [v["decision"] for v in verdicts] == ["review", "review", "allow"]
    text_id, image_id, allowed_id = (v["item_id"] for v in verdicts)

    report = env.bridge.worker().drain()
    assert (report.created, report.existing, report.failed) == (2, 0, 0)
    tasks = _by_item(env)
    assert set(tasks) == {text_id, image_id}

    # the project carries the generated config with the wellness style
    project = env.client.project(env.bridge.project_id)
    config = project["label_config"]
    assert "<Style>" in config and "blur(" in config and "grayscale(100%)" in config
    assert 'className="cg-media"' in config
    assert "<Video" not in config and "<Audio" not in config  # nothing can autoplay
    for code in env.bridge.policy.spec.codes:
        assert f'value="{code}"' in config
    assert env.bridge.policy.spec.category("grooming").definition.strip()[:40] in config

    # tasks carry priority, SLA and the model's suggestion as a prediction
    img_task = env.client.task(tasks[image_id]["id"])
    assert img_task["data"]["severity"] == "critical"
    assert img_task["data"]["priority"] > tasks[text_id]["data"]["priority"] - 100
    preds = env.client.task_predictions(img_task["id"])
    assert len(preds) == 1 and preds[0]["model_version"] == MODEL_VERSION
    by_name = {r["from_name"]: r["value"] for r in preds[0]["result"]}
    assert by_name[DECISION_FIELD]["choices"] == ["escalate-and-report"]
    assert "sexual_minors 0.80" in by_name[SUGGESTION_FIELD]["text"][0]

    # the image is a signed URL to our media endpoint, never base64 in Label Studio
    url = img_task["data"]["image"]
    assert url.startswith(env.api.url + "/v1/media/") and "data:" not in url
    assert "base64" not in json.dumps(img_task["data"])
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == image
    assert r.headers["cache-control"].startswith("private, no-store")
    q = parse_qs(urlparse(url).query)
    forged = url.replace(f"sig={q['sig'][0]}", "sig=" + "0" * 64)
    assert httpx.get(forged).status_code == 403
    assert tasks[text_id]["data"]["image"] == ""
    # the reviewer sees the text (kept in the restricted media area until retention ends)
    assert tasks[text_id]["data"]["text"] == review_item(1)["text"]

    # a reviewer annotates both through Label Studio's API; its webhooks deliver the decisions
    env.client.create_annotation(tasks[text_id]["id"], annotation_result(
        ReviewOutcome.BLOCK, ["grooming"], "asks for secrecy and a private app"))
    ann = env.client.create_annotation(tasks[image_id]["id"], annotation_result(
        ReviewOutcome.ESCALATE, ["sexual_minors"]))

    hist = wait_until(lambda: env.store.review_history(text_id))
    wait_until(lambda: env.store.review_history(image_id))
    assert [(d.outcome, d.categories, d.revision) for d in hist] == [
        (ReviewOutcome.BLOCK, ("grooming",), 1)]
    assert hist[0].reviewer == "review-test@childguard.local"
    assert env.store.get_verdict(text_id).decision is Decision.BLOCK
    final = env.store.get_verdict(image_id)
    assert final.decision is Decision.BLOCK and final.report
    assert env.store.get_verdict(allowed_id).decision is Decision.ALLOW

    events = [e.to_json() for e in env.store.audit_tail(50)]
    decided = {e["subject"] for e in events if e["action"] == "review.decided"}
    assert {text_id, image_id} <= decided

    payloads = env.callbacks.wait_for(2)
    assert sorted((p["item_id"], p["outcome"]) for p in payloads) == sorted(
        [(text_id, "block"), (image_id, "escalate")])
    key = env.bridge.secrets.callback_key
    for headers, body in env.callbacks.received:
        sig = {k.lower(): v for k, v in headers.items()}[SIGNATURE_HEADER.lower()]
        assert verify_callback(key, body, sig)
        assert not verify_callback("another key", body, sig)

    # the reviewer changes their mind: a new revision, history kept, callback again
    env.client.update_annotation(ann["id"], annotation_result(ReviewOutcome.ALLOW))
    hist = wait_until(lambda: len(env.store.review_history(image_id)) == 2
                      and env.store.review_history(image_id))
    assert [d.outcome for d in hist] == [ReviewOutcome.ESCALATE, ReviewOutcome.ALLOW]
    assert [d.revision for d in hist] == [1, 2]
    assert env.store.get_verdict(image_id).decision is Decision.ALLOW
    payloads = env.callbacks.wait_for(3)
    assert payloads[-1]["revision"] == 2 and payloads[-1]["decision"] == "allow"

    # nothing was missed, so the reconcile records nothing new
    rec = env.bridge.reconcile()
    assert (rec.recorded, rec.duplicate) == (0, 2)
    assert env.store.verify_audit().ok


def test_webhook_secret_duplicates_and_unknown_tasks(review_env: ReviewEnv) -> None:
    env = review_env
    (verdict,) = env.classify([review_item(10, callback=env.callbacks.url)])
    item_id = verdict["item_id"]
    env.bridge.worker().drain()
    task = _by_item(env)[item_id]
    ann = env.client.create_annotation(task["id"], annotation_result(ReviewOutcome.BLOCK,
                                                                     ["grooming"]))
    # recorded via Label Studio's own webhook
    assert len(wait_until(lambda: env.store.review_history(item_id))) == 1

    hook = f"{env.api.url}/v1/review/webhook"
    payload = {"action": "ANNOTATION_UPDATED", "task": env.client.task(task["id"]),
               "annotation": {**ann, "result": annotation_result(ReviewOutcome.ALLOW)}}
    for headers in ({}, {WEBHOOK_SECRET_HEADER: "wrong"}):
        r = httpx.post(hook, json=payload, headers=headers)
        assert r.status_code == 401
    assert [d.outcome for d in env.store.review_history(item_id)] == [ReviewOutcome.BLOCK]

    good = {WEBHOOK_SECRET_HEADER: env.bridge.secrets.webhook_secret}
    created = {"action": "ANNOTATION_CREATED", "task": env.client.task(task["id"]),
               "annotation": ann}
    for _ in range(2):  # the same delivery again, twice
        r = httpx.post(hook, json=created, headers=good)
        assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert len(env.store.review_history(item_id)) == 1

    unknown = {"action": "ANNOTATION_CREATED",
               "task": {"id": 999999, "data": {"item_id": "no-such-item"}}, "annotation": ann}
    r = httpx.post(hook, json=unknown, headers=good)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    r = httpx.post(hook, json={"action": "PROJECT_UPDATED"}, headers=good)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert len(env.callbacks.wait_for(1)) == 1  # one decision, one notification


def test_confirmed_block_feeds_the_review_bank(review_env: ReviewEnv, tmp_path: Path) -> None:
    service = pytest.importorskip(
        "childguard.hashing.service", reason="the hashing engineer's HashService is not in "
        "this tree yet; the bank update is wired to its contract (add_bytes/remove_bytes)")
    env = review_env
    image = _kodak()
    (verdict,) = env.classify([review_item(20, image=image, category="sexual_minors",
                                           score=0.8)])
    env.bridge.worker().drain()
    task = _by_item(env)[verdict["item_id"]]
    ann = env.client.create_annotation(task["id"], annotation_result(ReviewOutcome.BLOCK,
                                                                     ["sexual_minors"]))

    def decisive_bank() -> str | None:
        hs = service.HashService.from_settings(env.settings, env.store.engine)
        hit = hs.check(image).decisive
        return None if hit is None else hit.bank

    import time

    deadline = time.monotonic() + 10
    while decisive_bank() != "review-confirmed" and time.monotonic() < deadline:
        time.sleep(0.1)  # follow-ups run after the webhook response
    assert decisive_bank() == "review-confirmed"
    env.client.update_annotation(ann["id"], annotation_result(ReviewOutcome.ALLOW))
    deadline = time.monotonic() + 10
    while decisive_bank() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert decisive_bank() is None


def test_cli_init_sync_status(review_env: ReviewEnv, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from childguard.cli.main import main

    env = review_env
    s = env.settings
    for key, value in {
        "CHILDGUARD_HOME": str(s.home), "CHILDGUARD_POLICIES_DIR": str(s.policies_dir),
        "CHILDGUARD_REVIEW__LABEL_STUDIO_URL": s.review.label_studio_url,
        "CHILDGUARD_REVIEW__LABEL_STUDIO_TOKEN": s.review.label_studio_token or "",
        "CHILDGUARD_REVIEW__PROJECT_TITLE": s.review.project_title,
        "CHILDGUARD_REVIEW__PUBLIC_URL": s.review.public_url,
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)

    def run(*args: str) -> dict:
        capsys.readouterr()
        assert main(list(args)) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    init = run("review", "init", "--json")
    assert init["project_id"] == env.bridge.project_id and not init["created"]
    assert not init["config_updated"] and not init["webhook_changed"]  # idempotent
    env.classify([review_item(30), review_item(31)])
    status = run("review", "status", "--json")
    assert (status["pending"], status["in_review"], status["done"]) == (2, 0, 0)
    sync = run("review", "sync", "--json")
    assert sync["outbox"]["created"] == 2
    status = run("review", "status", "--json")
    assert (status["pending"], status["in_review"], status["overdue"]) == (0, 2, 0)
    # grooming is critical: its SLA (1 h by default) is long past four days later
    from datetime import UTC, datetime, timedelta

    from childguard.review_bridge.status import queue_status

    later = queue_status(env.store, env.client, env.bridge.project_id,
                         now=datetime.now(UTC) + timedelta(days=4))
    assert later["overdue"] == 2 and later["oldest_age_s"] > 3 * 86400
