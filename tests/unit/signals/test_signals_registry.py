"""The model registry and the reference signal implementations."""

from __future__ import annotations

import dataclasses
import importlib.util
import typing

import numpy as np
import pytest
from PIL import Image

from childguard.models import registry
from childguard.models.base import (
    ImageEmbedder,
    ImageSignalSource,
    Judge,
    Ocr,
    TextEmbedder,
)
from childguard.models.reference_signals import (
    ReferenceClipEmbedder,
    ReferenceImageSafety,
    ReferenceOcr,
    ReferenceTextEmbedder,
    image_digest,
)
from childguard.models.registry import REGISTRY, Implementation, RegistryError, Role
from childguard.schema import Status
from childguard.settings import JudgeSettings

_INTERFACE = {
    Role.JUDGE: Judge,
    Role.TEXT_EMBEDDER: TextEmbedder,
    Role.IMAGE_EMBEDDER: ImageEmbedder,
    Role.IMAGE_SIGNAL: ImageSignalSource,
    Role.OCR: Ocr,
}


def test_registry_is_consistent_and_signal_modules_exist() -> None:
    registry.check_registry()
    # judge backends live in the judge engineer's modules; here: signals + the reference judge
    ours = [i for i in REGISTRY if i.role is not Role.JUDGE or i.reference]
    registry.check_registry(ours, verify_imports=True)


def test_judge_names_match_the_settings_backends() -> None:
    backends = set(typing.get_args(JudgeSettings.model_fields["backend"].annotation))
    assert {i.name for i in registry.implementations(Role.JUDGE)} == backends


def test_each_signal_target_is_a_subclass_of_its_interface() -> None:
    for impl in REGISTRY:
        if impl.role is Role.JUDGE and importlib.util.find_spec(impl.module) is None:
            continue  # a judge backend module not present in this checkout (checked by name above)
        if impl.optional:
            continue
        cls = registry.resolve(impl.role, impl.name)
        assert issubclass(cls, _INTERFACE[impl.role]), impl


def test_duplicates_and_missing_coverage_are_reported() -> None:
    entries = list(REGISTRY)
    dup = dataclasses.replace(entries[-1])
    with pytest.raises(RegistryError, match="duplicate ocr name 'reference'"):
        registry.check_registry([*entries, dup])
    no_image = [i for i in entries if "image" not in i.content_types or i.role is Role.JUDGE]
    with pytest.raises(RegistryError, match="content type 'image'"):
        registry.check_registry(no_image)
    bad = Implementation(
        Role.OCR, "typo", "childguard.models.no_such_module:X", frozenset({"image"})
    )
    with pytest.raises(RegistryError, match="no_such_module not found"):
        registry.check_registry([*entries, bad], verify_imports=True)


def test_build_constructs_from_settings(tmp_path) -> None:
    from childguard.settings import Settings

    built = registry.build("ocr", "reference", Settings(home=tmp_path))
    assert isinstance(built, ReferenceOcr)
    assert isinstance(registry.build(Role.IMAGE_SIGNAL, "reference", Settings(home=tmp_path)),
                      ReferenceImageSafety)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="known: nudenet, opennsfw, reference"):
        registry.get("image_signal", "nudenett")


# -- reference implementations ----------------------------------------------------------


def test_reference_text_embedder_is_deterministic_and_normalised() -> None:
    a, b = ReferenceTextEmbedder(), ReferenceTextEmbedder()
    texts = ["garden party on sunday", "party in the garden", "quarterly tax report", ""]
    ea, eb = a.embed_texts(texts), b.embed_texts(texts)
    assert ea.shape == (4, 384) and ea.dtype == np.float32
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)
    assert ea[0] @ ea[1] > ea[0] @ ea[2]  # shared words -> closer


def test_reference_clip_concept_scores() -> None:
    clip = ReferenceClipEmbedder()
    red = Image.new("RGB", (40, 30), (200, 10, 10))
    blue = Image.new("RGB", (40, 30), (10, 10, 200))
    embs = clip.embed_images([red, blue, red])
    assert embs.shape == (3, clip.dim)
    np.testing.assert_array_equal(embs[0], embs[2])
    scores = clip.concept_scores(embs, ["a red square", "a blue square"])
    assert scores.shape == (3, 2) and np.all(np.abs(scores) <= 1.0)
    assert clip.concept_scores(embs, []).shape == (3, 0)


def test_reference_image_safety_scores_you_set() -> None:
    a = Image.new("RGB", (16, 16), (1, 2, 3))
    b = Image.new("RGB", (16, 16), (4, 5, 6))
    src = ReferenceImageSafety(default=0.1, signal_name="opennsfw")
    src.set_score(a, 0.9)
    (sa,), (sb,) = src.signals(a), src.signals(b)
    assert (sa.name, sa.score, sa.status) == ("opennsfw", 0.9, Status.OK)
    assert sb.score == 0.1
    assert sa.detail["digest"] == image_digest(a)[:16]
    (err,) = ReferenceImageSafety(fail=True).signals(a)
    assert err.status is Status.ERROR and err.score is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReferenceImageSafety(default=1.5)


def test_reference_ocr_text_you_set() -> None:
    a = Image.new("RGB", (16, 16), (1, 2, 3))
    ocr = ReferenceOcr()
    assert ocr.read(a) == ""
    ocr.set_text(a, "meet me at the park")
    assert ocr.read(a) == "meet me at the park"
    assert ocr.read(a.convert("L").convert("RGB")) == ""  # a different image
