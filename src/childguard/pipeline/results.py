"""Stage inputs and results: plain, picklable dataclasses that travel between Ray deployments.

Why: both hosts (in process and Ray Serve) pass the same values between the same stages, so a
verdict does not depend on where it was computed. `failed()` builds the fail-closed result of
any stage, used for exceptions and for timeouts by whichever host enforces them.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from PIL import Image

from childguard.hashing.video import Keyframe, VideoHashes
from childguard.models.base import JudgeOutput
from childguard.pipeline.redaction import Redactor, describe_exception
from childguard.rules import RuleHit
from childguard.schema import HashMatch, Message, Signal, Status

__all__ = ["DISABLED", "STAGES", "UNAVAILABLE", "GateResult", "HashResult", "JudgeResult",
           "PreparedItem", "SignalResult", "StageResult", "log_failure", "ms_since",
           "redactor_for", "stage_exception"]

log = logging.getLogger("childguard.pipeline")

#: stage names, in cascade order (keys of `Verdict.timings_ms`, plus "total")
STAGES = ("prepare", "hash", "signals", "gate", "judge", "decide")
#: `model_versions` values of a model that could not load / that settings turned off
UNAVAILABLE = "unavailable"
DISABLED = "disabled"


def ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@dataclass(frozen=True)
class PreparedItem:
    """A checked, decoded and normalised item. Raw content is kept out of `repr`."""

    item_id: str
    text: str | None = field(default=None, repr=False)
    normalized: str | None = field(default=None, repr=False)
    context: tuple[Message, ...] = field(default=(), repr=False)
    image_bytes: bytes | None = field(default=None, repr=False)
    image: Image.Image | None = field(default=None, repr=False)
    image_format: str | None = None
    image_size: tuple[int, int] | None = None
    #: a video item: its vPDQ and file hashes, and the keyframes the image signals read
    video: VideoHashes | None = field(default=None, repr=False)
    external_id: str | None = None
    source: str | None = None
    prepare_ms: float = 0.0

    @property
    def has_text(self) -> bool:
        return bool(self.text)

    @property
    def has_image(self) -> bool:
        """An image, or a video with keyframes (the image signals read both alike)."""
        return self.image is not None or bool(self.keyframes)

    @property
    def keyframes(self) -> tuple[Keyframe, ...]:
        return self.video.keyframes if self.video is not None else ()

    def redactor(self) -> Redactor:
        return Redactor([self.text, self.normalized, *(m.text for m in self.context)])


@dataclass(frozen=True)
class StageResult:
    """Common fields of every stage result. `failed()` builds the fail-closed result, used
    for exceptions here and for timeouts by whoever enforces them (here or Ray Serve)."""

    stage: ClassVar[str] = "stage"
    status: Status = Status.OK
    error: str | None = None
    elapsed_ms: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls: type[_R], error: str, elapsed_ms: float = 0.0) -> _R:
        return cls(status=Status.ERROR, error=error, elapsed_ms=elapsed_ms)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


_R = TypeVar("_R", bound=StageResult)


@dataclass(frozen=True)
class HashResult(StageResult):
    stage: ClassVar[str] = "hash"
    matches: tuple[HashMatch, ...] = ()
    decisive: HashMatch | None = None
    suppressed: tuple[HashMatch, ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)
    pdq_quality: int | None = None
    pdq_used: bool = False
    note: str = ""

    def signal(self) -> Signal | None:
        if self.status is Status.SKIPPED or (not self.hashes and self.ok):
            return None
        return Signal(
            name="hash",
            status=self.status,
            elapsed_ms=self.elapsed_ms,
            detail={
                "pdq_quality": self.pdq_quality,
                "pdq_used": self.pdq_used,
                "matches": len(self.matches),
                "suppressed": len(self.suppressed),
                "note": self.note,
                **{f"{k}": v for k, v in sorted(self.hashes.items())},
            },
        )


@dataclass(frozen=True)
class SignalResult(StageResult):
    stage: ClassVar[str] = "signals"
    signals: tuple[Signal, ...] = ()
    #: per category code: the highest probe / CLIP-concept score over the item's parts
    probe_scores: dict[str, float] = field(default_factory=dict)
    #: the message text (or OCR text) was scored by probes
    text_covered: bool = False
    #: at least one scored image signal exists
    image_covered: bool = False
    ocr_text: str | None = field(default=None, repr=False)
    #: policy rules that fired (the recall floor): by rule id, never the matched words
    rule_hits: tuple[RuleHit, ...] = ()

    @property
    def failed_signals(self) -> tuple[str, ...]:
        """Names of signals whose source reported its own failure (status=error)."""
        return tuple(s.name for s in self.signals if s.status is Status.ERROR)


@dataclass(frozen=True)
class GateResult(StageResult):
    stage: ClassVar[str] = "gate"
    allowed: bool = False
    reason: str = ""
    max_score: float | None = None


@dataclass(frozen=True)
class JudgeResult(StageResult):
    stage: ClassVar[str] = "judge"
    output: JudgeOutput | None = None



def redactor_for(item: PreparedItem, signals: SignalResult | None = None) -> Redactor:
    """The item's redactor, plus the OCR text its signal stage read."""
    red = item.redactor()
    if signals is not None and signals.ocr_text:
        red = red.with_secret(signals.ocr_text)
    return red


def log_failure(stage: str, item: PreparedItem, error: str, exc: BaseException) -> None:
    # the traceback's frames (files, lines, code), never the exception message unredacted
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.warning("stage %s failed for item %s: %s\n%s", stage, item.item_id, error, frames)


def stage_exception(
    kind: type[_R],
    item: PreparedItem,
    exc: BaseException,
    t0: float | None,
    elapsed_ms: float | None = None,
    signals: SignalResult | None = None,
) -> _R:
    """The fail-closed result of a stage that raised: a code and a redacted message."""
    error = describe_exception(exc, redactor_for(item, signals))
    log_failure(kind.stage, item, error, exc)
    elapsed = elapsed_ms if elapsed_ms is not None else (ms_since(t0) if t0 is not None else 0.0)
    return kind.failed(error, elapsed)
