"""Video through `POST /v1/classify` with real parts: the FastAPI app over a real SQLite store,
a real HashService with a test bank, the packaged image-safety detectors and OCR, MiniLM; the
judge is the deterministic reference judge (its own tests cover the LLM).

- a clip whose original is in a bank is blocked by vPDQ, the verdict naming the matching
  segment; a clip that is in no bank goes through keyframes: every image signal names its
  frame;
- the bad-video corpus: empty, truncated, random bytes, an image sent as a video, a frame
  bomb, over-long, over-size, bad base64, image and video together; every one gets a 4xx
  that says what was wrong, never a 5xx, and the service keeps answering.

The clips are Meta's benign sample videos; the "known" video is a test bank entry."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from childguard.hashing.service import HashService
from childguard.models.reference import ReferenceJudge
from childguard.pipeline import build_pipeline
from childguard.policy import load_policy
from childguard.schema import Severity
from childguard.serving.api import PipelineBackend, create_api
from childguard.settings import Settings
from childguard.store.db import make_engine
from childguard.store.migrate import migrate
from childguard.store.roles import Role
from childguard.store.store import Store
from sample_media import sample_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _video(name: str) -> bytes:
    return sample_video(name).read_bytes()


def _encoded(width: int, height: int, frames: int = 1, fmt: str = "mp4",
             codec: str = "libx264") -> bytes:
    """A synthetic clip (flat grey frames) encoded with PyAV's bundled FFmpeg."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=2)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8),
                                           format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    home = tmp_path_factory.mktemp("video-api")
    settings = Settings.load(
        home=home, policies_dir=REPO / "policies", judge={"backend": "reference"},
        limits={"max_video_bytes": 3_000_000, "max_video_duration_s": 60.0,
                "max_body_bytes": 8_000_000, "max_video_keyframes": 4})
    engine = make_engine(settings.db_url)
    migrate(engine)
    hashes = HashService.from_settings(settings, engine)
    hashes.ensure_bank("known_videos", category="sexual_minors", severity=Severity.CRITICAL)
    hashes.add_video("known_videos", _probe_hashes(settings), added_by="test")
    store = Store.from_settings(settings)
    _, key = store.create_key("video-test", Role.ADMIN)
    policy = load_policy(settings.policies_dir / "child_safety")
    pipeline = build_pipeline(settings, policy=policy, judge=ReferenceJudge(policy),
                              hashes=hashes)
    client = TestClient(create_api(settings, store, PipelineBackend(pipeline)),
                        raise_server_exceptions=False)
    yield client, {"Authorization": f"Bearer {key}"}
    pipeline.close()
    store.close()
    engine.dispose()


def _probe_hashes(settings: Settings) -> Any:
    from childguard.hashing.video import hash_video, video_limits

    return hash_video(_video("chair-orig-22-sd-bar"),
                      seconds_per_hash=settings.hashing.video_seconds_per_hash,
                      limits=video_limits(settings.limits))


def _post_file(client: TestClient, headers: dict, data: bytes, name: str = "clip.mp4",
               **fields: str) -> Any:
    return client.post("/v1/classify", headers=headers, data=fields,
                       files={"video": (name, data, "video/mp4")})


def test_a_known_video_is_blocked_by_vpdq_naming_the_segment(api) -> None:
    client, headers = api
    r = _post_file(client, headers, _video("chair-20-sd-bar"))
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["decision"] == "block" and not v["judged"]
    hit = next(s for s in v["signals"] if s["name"] == "hash")
    assert hit["detail"]["matches"] >= 1 and int(hit["detail"]["vpdq_frames"]) >= 5
    assert "video_md5" in hit["detail"] and "known_videos" in v["rationale"]
    assert "s" in v["rationale"]  # the matching stretch, in seconds
    assert {c["source"] for c in v["categories"]} == {"hash"}


def test_an_unknown_video_goes_through_keyframes(api) -> None:
    client, headers = api
    data = _video("doorknob-hd-no-bar")
    r = client.post("/v1/classify", headers=headers,
                    json={"video": base64.b64encode(data).decode(), "text": "our new door"})
    assert r.status_code == 200, r.text
    v = r.json()
    frames = {s["detail"].get("frame_s") for s in v["signals"]
              if s["name"] not in ("hash",) and not s["name"].startswith(("probe.", "rule."))}
    frames.discard(None)
    assert 1 <= len(frames) <= 4  # keyframes, at most max_video_keyframes
    assert any(s["name"] == "ocr" for s in v["signals"])
    hit = next(s for s in v["signals"] if s["name"] == "hash")
    assert hit["detail"]["matches"] == 0
    assert v["decision"] in ("allow", "review", "block") and v["status"] == "ok"
    # the reviewer's summary names the keyframes (the sheet's tiles carry the same times)
    from childguard.review_bridge.config import model_summary
    from childguard.schema import Verdict

    summary = model_summary(Verdict.model_validate(v))
    assert "Video keyframes at" in summary
    assert all(f"{t:.1f}" in summary for t in frames)


def _bomb() -> bytes:
    return _encoded(4096, 4096)  # 16.7 Mpx frames in a few kB: over max_video_frame_pixels


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


BAD = {
    "empty": (lambda: b"", 422, "empty"),
    "random bytes": (lambda: np.random.default_rng(0).bytes(50_000), 415, "cannot read"),
    "an image as a video": (_png, 415, "mp4, mov, webm"),
    "head cut off": (lambda: _video("doorknob-hd-no-bar")[40_000:], 415, "cannot read"),
    "frame bomb": (_bomb, 413, "pixels"),
    "over the size limit": (lambda: _video("chair-orig-22-sd-bar") * 2, 413, "bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_video_gets_a_4xx_that_says_why(api, case: str) -> None:
    client, headers = api
    make, status, phrase = BAD[case]
    r = _post_file(client, headers, make())
    assert r.status_code == status, (case, r.status_code, r.text)
    assert phrase in r.json()["message"], (case, r.text)
    # the service still answers
    assert client.get("/healthz").status_code == 200


def test_truncated_tail_keeps_what_decoded(api) -> None:
    """A file cut short: its readable part is classified (a verdict, not a 5xx), or, when the
    index is lost with the tail, a 4xx saying the file may be truncated."""
    client, headers = api
    data = _video("pattern-hd-no-bar")
    r = _post_file(client, headers, data[: len(data) // 2])
    assert r.status_code in (200, 415, 422), r.text
    if r.status_code != 200:
        assert "truncated" in r.json()["message"] or "cannot read" in r.json()["message"]


def test_other_bad_requests(api) -> None:
    client, headers = api
    r = client.post("/v1/classify", headers=headers, json={"video": "not base64!"})
    assert r.status_code == 422 and "video is not valid base64" in r.json()["message"]
    both = {"video": base64.b64encode(_encoded(64, 64)).decode(),
            "image": base64.b64encode(_png()).decode()}
    r = client.post("/v1/classify", headers=headers, json=both)
    assert r.status_code == 422 and "not both" in r.json()["message"]
    # longer than max_video_duration_s (60 s): 130 frames at 2 fps
    r = _post_file(client, headers, _encoded(64, 64, frames=130))
    assert r.status_code == 413 and "s long" in r.json()["message"], r.text
    # webm is allowed
    webm = _encoded(96, 64, frames=4, fmt="webm", codec="libvpx")
    r = _post_file(client, headers, webm, name="clip.webm")
    assert r.status_code == 200, r.text
