"""End-to-end tests of the Ray Serve app over HTTP: classify, hash hit, fail closed, roles,
bad input, metrics. One real Serve deployment for the whole module (see conftest.py).

Positive text cases use the reference judge's neutral test markers (`cg-test:<code>`), never
harmful text; images are benign Kodak photos.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from serving_support import Served, add_to_bank, kodak

from childguard.schema import Decision, Status, Verdict
from sample_media import sample_video

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def post(served: Served, path: str, who: str = "service", **kw: object) -> httpx.Response:
    return httpx.post(f"{served.url}{path}", headers=served.headers(who), timeout=TIMEOUT, **kw)


def get(served: Served, path: str, who: str = "admin") -> httpx.Response:
    return httpx.get(f"{served.url}{path}", headers=served.headers(who), timeout=TIMEOUT)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def verdict_of(resp: httpx.Response) -> Verdict:
    assert resp.status_code == 200, resp.text
    return Verdict.model_validate(resp.json())


# -- classification end to end -----------------------------------------------------------------


def test_text_item_is_classified_stored_and_readable(served: Served) -> None:
    v = verdict_of(post(served, "/v1/classify", json={
        "text": "what time is practice on saturday?", "source": "chat", "external_id": "ext-1",
    }))
    assert v.status is Status.OK
    assert v.decision is Decision.ALLOW
    assert v.judged  # no probes are trained here, so the gate cannot clear it
    assert v.external_id == "ext-1" and v.source == "chat"
    assert {"prepare", "signals", "gate", "judge", "decide"} <= set(v.timings_ms)
    assert "hash" not in v.timings_ms  # no image: the hash stage is skipped, as in process
    assert v.model_versions["judge"].startswith("reference-judge")
    # stored: a reviewer reads the same verdict back
    back = verdict_of(get(served, f"/v1/verdicts/{v.item_id}", who="reviewer"))
    assert back.item_id == v.item_id and back.decision is v.decision


def test_text_marker_is_blocked_by_the_judge(served: Served) -> None:
    v = verdict_of(post(served, "/v1/classify", json={"text": "hello cg-test:grooming"}))
    assert v.decision is Decision.BLOCK
    assert v.judged and v.report
    assert v.top_category is not None and v.top_category.code == "grooming"


def test_image_item_runs_the_image_deployments(served: Served) -> None:
    v = verdict_of(post(served, "/v1/classify", json={"image": b64(kodak(1).read_bytes())}))
    assert v.status is Status.OK
    names = {s.name for s in v.signals}
    assert "reference_image_safety" in names  # from the ImageSafety deployment
    assert "ocr" in names
    assert "clip.concept" in names  # from the Embedder deployment
    assert any(m.startswith("reference-clip") for m in v.model_versions.values())
    assert v.decision is Decision.ALLOW
    # the hash stage's hashes are stored with the item (not computed a second time)
    stored = served.store.item_info(v.item_id).hashes
    assert stored["pdq"] == v.image_hashes()["pdq"] and len(stored["pdq"]) == 64
    assert stored["image_sha256"] == v.image_hashes()["image_sha256"]


def test_video_keyframes_run_the_image_deployments(served: Served) -> None:
    """A video's keyframes cross from the ingress to the image deployments (pickled with the
    prepared item) and every image signal names its frame."""
    clip = sample_video("doorknob-hd-no-bar")
    resp = post(served, "/v1/classify",
                files={"video": ("door.mp4", clip.read_bytes(), "video/mp4")})
    v = verdict_of(resp)
    assert v.status is Status.OK
    framed = [s for s in v.signals if "frame_s" in s.detail]
    assert {"reference_image_safety", "clip.concept", "ocr"} <= {s.name for s in framed}
    assert next(s for s in v.signals if s.name == "hash").detail["vpdq_frames"]


def test_text_and_image_multipart_upload(served: Served) -> None:
    resp = post(
        served, "/v1/classify",
        files={"image": ("photo.png", kodak(2).read_bytes(), "image/png")},
        data={"text": "look at this view", "context": json.dumps(
            [{"author": "other", "text": "where were you today?"}]
        ), "external_id": "mp-1"},
    )
    v = verdict_of(resp)
    assert v.status is Status.OK and v.external_id == "mp-1"
    names = {s.name for s in v.signals}
    assert {"reference_image_safety", "clip.concept"} <= names
    assert v.judged


def test_hash_bank_hit_blocks_and_skips_the_models(served: Served) -> None:
    assert served.banked_image is not None
    v = verdict_of(post(served, "/v1/classify", json={
        "text": "cg-test:error", "image": b64(served.banked_image.read_bytes()),
    }))
    assert v.decision is Decision.BLOCK
    assert v.status is Status.OK
    assert v.hash_matches and v.hash_matches[0].bank == "cg-test-bank"
    assert not v.judged
    # the models were skipped: no signal or judge stage ran (the error marker never fired)
    assert "signals" not in v.timings_ms and "judge" not in v.timings_ms
    assert v.report  # sexual_minors is reportable


def test_bank_additions_reach_the_running_matcher(served: Served) -> None:
    assert served.banked_image is not None
    image = kodak(24).read_bytes()
    before = verdict_of(post(served, "/v1/classify", json={"image": b64(image)}))
    assert not before.hash_matches
    assert add_to_bank(served.settings, served.store, kodak(24))  # another process adds it
    time.sleep(1.5)  # > hash_refresh_s of the fixture
    after = verdict_of(post(served, "/v1/classify", json={"image": b64(image)}))
    assert after.decision is Decision.BLOCK and after.hash_matches


def test_judge_failure_ends_in_review(served: Served) -> None:
    v = verdict_of(post(served, "/v1/classify", json={"text": "please answer cg-test:error"}))
    assert v.status is Status.ERROR
    assert v.decision is Decision.REVIEW
    assert any(e.startswith("judge:") for e in v.errors)
    assert "cg-test" not in " ".join(v.errors)  # content is redacted from errors


def test_batch_keeps_order(served: Served) -> None:
    own_id = f"client-{uuid.uuid4().hex[:12]}"
    items = [
        {"id": own_id, "text": "see you at the library", "external_id": "b0"},
        {"text": "cg-test:sextortion", "external_id": "b1"},
        {"image": b64(kodak(3).read_bytes()), "external_id": "b2"},
    ]
    resp = post(served, "/v1/classify/batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    verdicts = [Verdict.model_validate(v) for v in resp.json()["verdicts"]]
    assert [v.external_id for v in verdicts] == ["b0", "b1", "b2"]
    assert verdicts[1].decision is Decision.BLOCK
    assert len({v.item_id for v in verdicts}) == 3
    assert verdicts[0].item_id == own_id  # a client-chosen id is kept and readable
    assert verdict_of(get(served, f"/v1/verdicts/{own_id}")).external_id == "b0"


# -- roles --------------------------------------------------------------------------------------

ROLES = ["service", "reviewer", "policy_author", "admin", "none", "revoked", "unknown"]
PUBLIC = {"/healthz", "/readyz", "/docs", "/openapi.json"}
#: endpoint -> roles that may call it (admin passes every check)
MATRIX: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/classify"): {"service", "admin"},
    ("POST", "/v1/classify/batch"): {"service", "admin"},
    ("GET", "/v1/verdicts/{id}"): {"service", "reviewer", "admin"},
    ("GET", "/metrics"): {"admin"},
    **{("GET", p): set(ROLES) for p in PUBLIC},
}


def _call(served: Served, method: str, path: str, who: str, item_id: str) -> httpx.Response:
    url = served.url + path.replace("{id}", item_id)
    headers = served.headers(who)
    if path == "/v1/classify":
        return httpx.post(url, headers=headers, json={"text": "good morning"}, timeout=TIMEOUT)
    if path == "/v1/classify/batch":
        return httpx.post(url, headers=headers, json={"items": [{"text": "hi"}]}, timeout=TIMEOUT)
    return httpx.request(method, url, headers=headers, timeout=TIMEOUT)


def test_every_endpoint_checks_every_role(served: Served) -> None:
    item_id = verdict_of(post(served, "/v1/classify", json={"text": "matrix seed"})).item_id
    failures = []
    for (method, path), allowed in MATRIX.items():
        for who in ROLES:
            resp = _call(served, method, path, who, item_id)
            if who in allowed:
                expected = {200}
            elif who in ("none", "revoked", "unknown"):
                expected = {401}
            else:
                expected = {403}
            if resp.status_code not in expected:
                failures.append(f"{method} {path} as {who}: {resp.status_code} {resp.text[:120]}")
            elif resp.status_code in (401, 403):
                body = resp.json()
                assert body["status"] == resp.status_code and body["message"]
    assert not failures, "\n".join(failures)


# -- bad input ------------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 180, 160)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_gets_4xx_with_what_was_received_and_allowed(served: Served) -> None:
    limits = served.settings.limits
    kodak_png = kodak(4).read_bytes()
    cases: list[tuple[str, dict[str, object], int, list[str]]] = [
        ("body too large", {"content": b"{" + b" " * (limits.max_body_bytes + 10) + b"}",
                            "headers": {"content-type": "application/json"}},
         413, ["request body", str(limits.max_body_bytes)]),
        ("image over the pixel limit", {"json": {"image": b64(_png(1200, 1000))}},
         413, ["1200x1000", str(limits.max_image_pixels)]),
        ("unsupported image type", {"json": {"image": b64(b"%PDF-1.4\n% not an image\n")}},
         415, ["allowed", "PNG"]),
        ("invalid base64", {"json": {"image": "not base64 at all!"}},
         422, ["base64", "18 characters"]),
        ("text over the limit", {"json": {"text": "a" * (limits.max_text_chars + 1)}},
         413, [str(limits.max_text_chars + 1), str(limits.max_text_chars)]),
        ("unknown field", {"json": {"text": "hi", "colour": "red"}}, 422, ["colour"]),
        ("missing content", {"json": {"source": "chat"}}, 422, ["missing content"]),
        ("empty body", {"content": b"", "headers": {"content-type": "application/json"}},
         422, ["empty"]),
        ("not JSON", {"content": b"{nope", "headers": {"content-type": "application/json"}},
         422, ["JSON"]),
        ("unsupported content type", {"content": b"hello",
                                      "headers": {"content-type": "text/plain"}},
         415, ["text/plain", "application/json"]),
        ("truncated image", {"json": {"image": b64(kodak_png[: len(kodak_png) // 2])}},
         422, ["truncated"]),
        ("too many context messages", {"json": {"text": "hi", "context": [
            {"text": "x"}] * (limits.max_context_messages + 1)}},
         413, ["context", str(limits.max_context_messages)]),
        ("bad callback url", {"json": {"text": "hi", "callback_url": "ftp://x"}},
         422, ["callback_url"]),
    ]
    failures = []
    for name, kwargs, status, needles in cases:
        headers = {**served.headers("service"), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        resp = httpx.post(f"{served.url}/v1/classify", headers=headers, timeout=TIMEOUT,
                          **kwargs)  # type: ignore[arg-type]
        body = resp.json() if resp.headers.get("content-type", "").startswith(
            "application/json") else {}
        message = str(body.get("message", ""))
        if resp.status_code != status or not all(n in message for n in needles):
            failures.append(f"{name}: {resp.status_code} {resp.text[:200]}")
    # a body over the limit without Content-Length (chunked) is cut off while streaming
    def chunks() -> Iterator[bytes]:
        for _ in range(limits.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    for path in ("/v1/classify", "/v1/classify/batch"):
        resp = httpx.post(f"{served.url}{path}", content=chunks(), timeout=TIMEOUT,
                          headers={**served.headers("service"),
                                   "content-type": "application/json"})
        if resp.status_code != 413 or "at most" not in resp.json()["message"]:
            failures.append(f"chunked body to {path}: {resp.status_code} {resp.text[:200]}")
    # batch over the limit
    items = [{"text": "hi"}] * (limits.max_batch_items + 1)
    resp = post(served, "/v1/classify/batch", json={"items": items})
    if resp.status_code != 413 or str(limits.max_batch_items) not in resp.json()["message"]:
        failures.append(f"batch over the limit: {resp.status_code} {resp.text[:200]}")
    # a bad item in a batch names its index
    resp = post(served, "/v1/classify/batch", json={"items": [{"text": "ok"}, {"image": "!!"}]})
    if resp.status_code != 422 or "items[1]" not in resp.json()["message"]:
        failures.append(f"bad batch item: {resp.status_code} {resp.text[:200]}")
    assert not failures, "\n".join(failures)


# -- operations -----------------------------------------------------------------------------------


def test_ready_health_docs(served: Served) -> None:
    ready = get(served, "/readyz", who="none")
    assert ready.status_code == 200, ready.text
    comps = ready.json()["components"]
    assert {"hash_matcher", "embedder", "image_safety", "judge", "store"} <= set(comps)
    assert get(served, "/healthz", who="none").json()["status"] == "ok"
    spec = get(served, "/openapi.json", who="none").json()
    assert {"/v1/classify", "/v1/classify/batch", "/v1/verdicts/{item_id}"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    # the policy workbench is served by the same ingress (its flow: tests/integration/workbench)
    page = get(served, "/workbench", who="none")
    assert page.status_code == 200 and "policy_author" in page.text and "<form" in page.text
    assert "/workbench" not in spec["paths"]  # pages, not API operations


def test_metrics_count_requests_stages_and_decisions(served: Served) -> None:
    verdict_of(post(served, "/v1/classify", json={"text": "metrics probe cg-test:grooming"}))
    text = get(served, "/metrics").text
    assert 'childguard_decisions_total{category="grooming",decision="block"}' in text
    assert 'childguard_stage_seconds_count{stage="judge"}' in text
    assert "childguard_judge_calls_total" in text
    assert 'childguard_http_requests_total{method="POST",route="/v1/classify",status="200"}' in text
    assert "childguard_inflight_requests" in text
    assert "childguard_review_outbox_depth" in text
