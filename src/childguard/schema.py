"""The shared types every stage and every consumer speaks.

One frozen, closed (unknown keys rejected) pydantic model per concept, so a verdict produced by
the in-process pipeline, by Ray Serve, or read back from the store is the same object. Label
Studio JSON and MLflow rows are translated at their boundaries, never here.

Raw content only lives in `ContentItem`; everything downstream of it (signals, verdicts, review
decisions) carries ids, hashes, scores and rationale, so it can be logged and stored safely.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

SCHEMA_VERSION = "1"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


def _decode_b64(value: object) -> object:
    """Accept raw bytes in Python and base64 text in JSON."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(
                "image must be base64 (RFC 4648, standard alphabet, padded); "
                f"could not decode {len(value)} characters: {exc}"
            ) from exc
    return value


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]

Score = Annotated[float, Field(ge=0.0, le=1.0)]
JsonScalar = str | int | float | bool | None


class Frozen(BaseModel):
    """Base for every shared type: immutable, and closed to unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Decision(StrEnum):
    """What happens to the item. Kept apart from `Status`: an error still has a decision."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class Status(StrEnum):
    """Whether the stage (or the whole pipeline) ran as intended."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Message(Frozen):
    """One earlier message of the conversation the item belongs to (context for the judge)."""

    author: str = Field(default="other", max_length=64, description="e.g. 'sender', 'recipient'")
    text: str
    sent_at: datetime | None = None


class ContentItem(Frozen):
    """What a product service asks us to classify: text, an image, or both."""

    id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    text: str | None = None
    image: Base64Bytes | None = Field(default=None, description="image bytes; base64 in JSON")
    image_ref: str | None = Field(
        default=None, max_length=2048, description="media id of an image already stored"
    )
    video: Base64Bytes | None = Field(
        default=None, description="video bytes (mp4, mov, webm); base64 in JSON")
    context: tuple[Message, ...] = Field(default=(), description="earlier messages, oldest first")
    source: str | None = Field(default=None, max_length=128)
    external_id: str | None = Field(default=None, max_length=256)
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, JsonScalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_content(self) -> ContentItem:
        if not (self.text or self.image or self.image_ref or self.video):
            raise ValueError(
                "missing content: give 'text', 'image' (base64), 'image_ref' or 'video'; "
                "received none"
            )
        if self.video is not None and (self.image is not None or self.image_ref is not None):
            raise ValueError("give an image or a video, not both (send two items)")
        return self

    @property
    def has_image(self) -> bool:
        return self.image is not None or self.image_ref is not None


class Signal(Frozen):
    """One cheap signal about an item: a probe score, a detector output, OCR text length, ..."""

    name: str = Field(description="e.g. 'probe.minilm', 'clip.concept', 'nudenet', 'ocr'")
    status: Status = Status.OK
    category: str | None = Field(default=None, description="policy category code, if any")
    score: Score | None = None
    model: str | None = None
    detail: dict[str, JsonScalar] = Field(default_factory=dict)
    elapsed_ms: float = Field(default=0.0, ge=0.0)


class VideoSegment(Frozen):
    """A stretch of a submitted video that matches a bank video (seconds in each)."""

    query_start: float
    query_end: float
    target_start: float
    target_end: float


class VideoMatchInfo(Frozen):
    """vPDQ's two shares for a video hit, and the matching segments."""

    query_match_pct: float = Field(description="share of the item's frames (quality >= 50) "
                                   "within the distance of a bank video frame")
    target_match_pct: float = Field(description="share of the bank video's frames matched")
    segments: tuple[VideoSegment, ...] = ()


class HashMatch(Frozen):
    """A hit of the item's hashes in a hash bank."""

    bank: str
    signal_type: str = Field(description="'pdq', 'md5', 'sha256' or 'vpdq' (a video)")
    distance: int = Field(ge=0, description="bits for PDQ; 0 for exact hashes; for vPDQ "
                          "100 minus the smaller of the two match shares, rounded")
    entry_id: str | int
    category: str | None = None
    severity: Severity | None = None
    negative: bool = Field(default=False, description="hit in an allowlist bank")
    quarantined: bool = Field(default=False, description="entry held back by the flood guard")
    video: VideoMatchInfo | None = None


class CategoryScore(Frozen):
    """How strongly the item falls into one policy category, and why."""

    code: str
    score: Score
    decision: Decision
    rationale: str = ""
    source: str = Field(default="judge", description="'judge', 'probe', 'hash', 'combined'")


class Verdict(Frozen):
    """The one result type: what the pipeline decided about an item, and how."""

    schema_version: str = SCHEMA_VERSION
    item_id: str
    decision: Decision
    status: Status = Status.OK
    categories: tuple[CategoryScore, ...] = ()
    signals: tuple[Signal, ...] = ()
    hash_matches: tuple[HashMatch, ...] = ()
    rationale: str = ""
    report: bool = Field(default=False, description="a report to NCMEC/authorities is due")
    judged: bool = Field(default=False, description="the LLM judge was called")
    policy_id: str = ""
    policy_version: str = Field(default="", description="content hash of the policy files used")
    model_versions: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    errors: tuple[str, ...] = Field(
        default=(),
        description="one line per failed stage: '<stage>: <code> (<exception type>)[: message]', "
        "code one of timeout, model_unavailable, dependency_down, invalid_input, worker_died, "
        "stage_failed; never a traceback, address or content (those stay in the server log)",
    )
    external_id: str | None = None
    source: str | None = None
    created_at: datetime = Field(default_factory=_utcnow)

    @model_validator(mode="after")
    def _fail_closed(self) -> Verdict:
        if self.status is Status.ERROR and self.decision is Decision.ALLOW:
            raise ValueError("a verdict with status=error can never be 'allow' (fail closed)")
        return self

    @property
    def top_category(self) -> CategoryScore | None:
        return max(self.categories, key=lambda c: c.score, default=None)

    def image_hashes(self) -> dict[str, str]:
        """The hashes the hash stage computed for the item's image (store keys: image_md5,
        image_sha256, pdq, pdq_quality), so the store keeps them without hashing again."""
        sig = next((s for s in self.signals if s.name == "hash"), None)
        if sig is None:
            return {}
        d = sig.detail
        out = {k: str(d[src]) for k, src in (("image_md5", "md5"), ("image_sha256", "sha256"),
                                             ("pdq", "pdq")) if d.get(src)}
        if out.get("pdq") and d.get("pdq_quality") is not None:
            out["pdq_quality"] = str(d["pdq_quality"])
        return out

    def score_of(self, code: str) -> float | None:
        for cat in self.categories:
            if cat.code == code:
                return cat.score
        return None


class ReviewOutcome(StrEnum):
    """A reviewer's final call. `escalate` means block and report."""

    ALLOW = "allow"
    BLOCK = "block"
    ESCALATE = "escalate"

    @property
    def decision(self) -> Decision:
        return Decision.ALLOW if self is ReviewOutcome.ALLOW else Decision.BLOCK


class ReviewDecision(Frozen):
    """A human reviewer's decision on an item, as it comes back from the review queue."""

    item_id: str
    outcome: ReviewOutcome
    reviewer: str
    categories: tuple[str, ...] = ()
    comment: str = ""
    decided_at: datetime = Field(default_factory=_utcnow)
    task_id: str | None = None
    annotation_id: str | None = None
    revision: int = Field(default=1, ge=1, description="1 for the first decision, +1 per change")

    @property
    def decision(self) -> Decision:
        return self.outcome.decision

    @property
    def report(self) -> bool:
        return self.outcome is ReviewOutcome.ESCALATE


def error_verdict(item_id: str, stage: str, error: str, **extra: Any) -> Verdict:
    """The fail-closed verdict: any stage failure sends the item to review, never to allow."""
    return Verdict(
        item_id=item_id,
        decision=Decision.REVIEW,
        status=Status.ERROR,
        rationale=f"stage '{stage}' failed; sent to human review (fail closed)",
        errors=(f"{stage}: {error}",),
        **extra,
    )
