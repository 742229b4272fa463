"""The small interfaces every model role implements, and the registry that lists them.

Modelled on python-threatexchange's SignalType/Classifier: identity as class attributes
(`name`), construction from settings (`from_settings`), and an explicit registry checked at
start-up (unique names, every content type covered). Each role ships a deterministic reference
implementation in the package (see `reference.py`), registered like the real ones, so tests and
demos exercise the same code paths.

Models report themselves unavailable (`ModelUnavailable`) rather than silently degrading: a
service without CLIP weights says so at start-up and in every verdict's `model_versions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from childguard.policy import Policy
from childguard.schema import Message, Signal, Status
from childguard.settings import Settings


class JudgeInput(BaseModel):
    """What the judge sees of an item: text (original and normalised), context, OCR text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str
    text: str | None = None
    normalized: str | None = None
    context: tuple[Message, ...] = ()
    ocr_text: str | None = None
    has_image: bool = False


class JudgeOutput(BaseModel):
    """A judge's answer. Scores are probabilities from label tokens, not numbers it wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Status = Status.OK
    violation: float = Field(default=0.0, ge=0.0, le=1.0, description="P(violation)")
    category: str | None = Field(default=None, description="the category it chose, or None")
    category_scores: dict[str, float] = Field(default_factory=dict)
    rationale: str = ""
    error: str | None = None
    model: str = ""
    elapsed_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0


class Judge(ABC):
    """A policy-prompted LLM judge."""

    name: ClassVar[str]
    #: the policy it judges by (every implementation sets it in its constructor)
    policy: Policy

    def use_policy(self, policy: Policy) -> None:
        """Judge by another version of the policy from now on, with the same model (a
        promotion or rollback picked up without a restart). Implementations that derive state
        from the policy (a cached prompt prefix) extend this."""
        self.policy = policy

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> Judge: ...

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def judge(self, item: JudgeInput) -> JudgeOutput:
        """Never raises for model trouble: returns status=error with the reason."""

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        return [self.judge(i) for i in items]

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class TextEmbedder(ABC):
    name: ClassVar[str]
    dim: int

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 array of shape (len(texts), dim)."""


class ImageEmbedder(ABC):
    name: ClassVar[str]
    dim: int

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised float32 array of shape (len(images), dim)."""


class ImageSignalSource(ABC):
    """An image-safety detector (NudeNet, OpenNSFW, ...) producing signals."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def signals(self, image: Image.Image) -> list[Signal]: ...

    def versions(self) -> dict[str, str]:
        """`model_versions` entries of this source: its own name and version; a source that
        stands for several detectors (the Ray deployment's proxy) names each of them."""
        return {self.name: self.model_version}


class Ocr(ABC):
    name: ClassVar[str]

    @property
    @abstractmethod
    def model_version(self) -> str: ...

    @abstractmethod
    def read(self, image: Image.Image) -> str:
        """The text found in the image ('' if none)."""
