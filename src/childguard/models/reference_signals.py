"""Deterministic reference implementations of the signal roles, shipped in the package.

Why: tests and demos must run the real pipeline code paths without 100 MB of weights, and must
be able to set a signal to exactly the value a test needs ("this image scores 0.9"). These are
real subclasses of the interfaces in `models/base.py`, registered in `models/registry.py` like
the real ones (the pattern of simonw/llm's test models). They are never picked by default.

- `ReferenceTextEmbedder`: bag of hash-seeded random token vectors, L2-normalised. Texts that
  share words get similar embeddings, so a probe trained on it learns something real.
- `ReferenceClipEmbedder`: text as above; images from a fixed random projection of an 8x8
  thumbnail; `concept_scores` like `OpenClipEmbedder`.
- `ReferenceImageSafety`: scores you set per image digest (or a default), or an error.
- `ReferenceOcr`: text you set per image digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from childguard.models.base import ImageEmbedder, ImageSignalSource, Ocr, TextEmbedder
from childguard.schema import Signal, Status
from childguard.settings import Settings

__all__ = [
    "ReferenceClipEmbedder",
    "ReferenceImageSafety",
    "ReferenceOcr",
    "ReferenceTextEmbedder",
    "image_digest",
]

_TOKEN = re.compile(r"\w+", re.UNICODE)


def image_digest(image: Image.Image) -> str:
    """sha256 of the RGB pixels and size: how the reference sources recognise an image."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def _token_vector(token: str, dim: int, salt: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{salt}:{token}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim)


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class ReferenceTextEmbedder(TextEmbedder):
    """Deterministic bag-of-words embedder (hash-seeded token vectors), default dim 384."""

    name: ClassVar[str] = "reference"

    def __init__(self, dim: int = 384, salt: str = "childguard") -> None:
        self.dim = dim
        self._salt = salt
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceTextEmbedder:
        return cls()

    @property
    def model_version(self) -> str:
        return f"reference-text:{self.dim}:{self._salt}"

    def _vec(self, token: str) -> np.ndarray:
        v = self._cache.get(token)
        if v is None:
            v = _token_vector(token, self.dim, self._salt)
            self._cache[token] = v
        return v

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            tokens = _TOKEN.findall(text.casefold())
            for tok in tokens or ["<empty>"]:
                out[i] += self._vec(tok)
        return _l2(out)


class ReferenceClipEmbedder(ReferenceTextEmbedder, ImageEmbedder):
    """Text and image in one deterministic space (the images part is a fixed projection)."""

    name: ClassVar[str] = "reference"

    def __init__(self, dim: int = 64, salt: str = "childguard-clip") -> None:
        super().__init__(dim=dim, salt=salt)
        seed = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
        self._proj = np.random.default_rng(seed).standard_normal((8 * 8 * 3, dim))

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceClipEmbedder:
        return cls()

    @property
    def model_version(self) -> str:
        return f"reference-clip:{self.dim}:{self._salt}"

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for im in images:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            thumb = np.asarray(rgb.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float64)
            rows.append((thumb.reshape(-1) / 255.0 - 0.5) @ self._proj)
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2(np.stack(rows))

    def concept_scores(self, image_embs: np.ndarray, concepts: Sequence[str]) -> np.ndarray:
        if not concepts:
            return np.zeros((len(image_embs), 0), dtype=np.float32)
        sims = np.asarray(image_embs, dtype=np.float32) @ self.embed_texts(list(concepts)).T
        return np.asarray(np.clip(sims, -1.0, 1.0), dtype=np.float32)


class ReferenceImageSafety(ImageSignalSource):
    """An image-safety source whose scores you set: per image digest, else `default`."""

    name: ClassVar[str] = "reference"

    def __init__(
        self,
        scores: Mapping[str, float] | None = None,
        *,
        default: float = 0.0,
        signal_name: str = "reference_image_safety",
        fail: bool = False,
    ) -> None:
        for key, value in {**(scores or {}), "default": default}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"score for {key} must be in [0, 1]; received {value}")
        self._scores = dict(scores or {})
        self._default = default
        self.signal_name = signal_name
        self.fail = fail

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceImageSafety:
        return cls()

    @property
    def model_version(self) -> str:
        return f"reference-image-safety:{self.signal_name}"

    def set_score(self, image: Image.Image, score: float) -> None:
        self._scores[image_digest(image)] = score

    def signals(self, image: Image.Image) -> list[Signal]:
        if self.fail:
            return [
                Signal(
                    name=self.signal_name, status=Status.ERROR, model=self.model_version,
                    detail={"error": "reference failure (fail=True)"},
                )
            ]
        digest = image_digest(image)
        score = self._scores.get(digest, self._default)
        return [
            Signal(
                name=self.signal_name, score=score, model=self.model_version,
                detail={"digest": digest[:16]},
            )
        ]


class ReferenceOcr(Ocr):
    """OCR whose text you set per image digest ('' for any other image)."""

    name: ClassVar[str] = "reference"

    def __init__(self, texts: Mapping[str, str] | None = None, *, default: str = "") -> None:
        self._texts = dict(texts or {})
        self._default = default

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceOcr:
        return cls()

    @property
    def model_version(self) -> str:
        return "reference-ocr"

    def set_text(self, image: Image.Image, text: str) -> None:
        self._texts[image_digest(image)] = text

    def read(self, image: Image.Image) -> str:
        return self._texts.get(image_digest(image), self._default)
