"""The classification cascade, free of Ray: a `ContentItem` in, a `Verdict` out.

Why it looks like this:

- **One object, three hosts.** The CLI and evaluation call `Pipeline.classify` in-process; the Ray
  Serve app calls the stage methods (`prepare`, `hash_stage`, `signal_stage`, `gate`,
  `judge_stage`, `decide`) inside separate deployments. Offline numbers are therefore the numbers
  of the service, and the stage results are plain picklable dataclasses that can travel between
  deployments.
- **Cheapest first.** A decisive hash-bank hit blocks the item before any model runs; the cheap
  signals (text probes, CLIP concepts, image-safety detectors) let clearly benign items skip the
  LLM judge through the gate; only the rest pay for the judge.
- **Fail closed.** Stage methods never raise for model or stage trouble: they return a result
  with `status=error` and a redacted reason. `classify` also bounds every stage by
  `settings.serve.stage_timeout_s`. Any error or timeout ends in `status=error, decision=review`,
  never allow. Only bad *input* raises (`UserError`), which the API turns into a 4xx.
- **No raw content leaves the item.** Verdicts, errors and logs carry ids, hashes, scores and
  rationale. Error messages and the judge's rationale are passed through a redactor that removes
  any run of characters copied from the item (text, normalised text, context, OCR text).
- **Pluggable where quality work will tune it.** The gate (`GatePolicy`) and the way probe and
  judge scores become one score per category (`ScoreCombiner`) are small strategy classes; the
  defaults implement the policy's gate and "judge score when judged, else probe score".
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import re
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image

from childguard.content import check_text, decode_image
from childguard.errors import (
    ChildguardError,
    ContentTooLarge,
    DependencyError,
    InvalidContent,
    ModelUnavailable,
    UserError,
)
from childguard.models.base import (
    ImageEmbedder,
    ImageSignalSource,
    Judge,
    JudgeInput,
    JudgeOutput,
    Ocr,
    TextEmbedder,
)
from childguard.policy import Policy, resolve_policy_path
from childguard.policy_calibration import load_calibrated_policy
from childguard.rules import FLOOR_RANK, RuleHit
from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    HashMatch,
    Message,
    Signal,
    Status,
    Verdict,
)
from childguard.settings import Settings

__all__ = [
    "DECISION_RANK",
    "STAGES",
    "Combination",
    "CombinedScore",
    "GatePolicy",
    "GateResult",
    "HashResult",
    "JudgeFirstCombiner",
    "JudgeResult",
    "Pipeline",
    "PreparedItem",
    "ProbeModel",
    "Redactor",
    "ScoreCombiner",
    "SignalResult",
    "StageResult",
    "ThresholdGate",
]

log = logging.getLogger("childguard.pipeline")

#: stage names, in cascade order (keys of `Verdict.timings_ms`, plus "total")
STAGES = ("prepare", "hash", "signals", "gate", "judge", "decide")

DECISION_RANK = {Decision.ALLOW: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}
UNAVAILABLE = "unavailable"
DISABLED = "disabled"


def _max_decision(*decisions: Decision) -> Decision:
    return max(decisions, key=DECISION_RANK.__getitem__, default=Decision.ALLOW)


def _worst_first(c: CategoryScore) -> tuple[int, float]:
    """Sort key for a rationale: block before review before allow, then the higher score."""
    return (-DECISION_RANK[c.decision], -c.score)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


# -- collaborators typed by what the pipeline needs --------------------------------------------


@runtime_checkable
class ProbeModel(Protocol):
    """What the pipeline needs of a probe set (`childguard.models.probes.ProbeSet`)."""

    version: str
    embedder: str

    def predict(self, embs: np.ndarray) -> dict[str, np.ndarray]: ...


class HashCheckLike(Protocol):
    """What the pipeline reads of `childguard.hashing.service.HashCheck`."""

    @property
    def hashes(self) -> dict[str, str]: ...
    @property
    def pdq_quality(self) -> int | None: ...
    @property
    def pdq_used(self) -> bool: ...
    @property
    def note(self) -> str: ...
    @property
    def matches(self) -> tuple[HashMatch, ...]: ...
    @property
    def decisive(self) -> HashMatch | None: ...
    @property
    def suppressed(self) -> tuple[HashMatch, ...]: ...


class HashChecker(Protocol):
    """What the pipeline needs of `childguard.hashing.service.HashService`."""

    def check(self, data: bytes) -> HashCheckLike: ...


def probe_version(probes: ProbeModel) -> str:
    return str(getattr(probes, "model_version", None) or probes.version)


def embedder_keys(embedder: TextEmbedder) -> tuple[str, ...]:
    """The names a probe set may record for the embedder it was trained on."""
    version = embedder.model_version
    keys = [version, version.split("@", 1)[0], getattr(embedder, "name", "")]
    return tuple(dict.fromkeys(k for k in keys if k))


# -- redaction ---------------------------------------------------------------------------------


class Redactor:
    """Removes any run of characters copied from the item's content from a string.

    Used on error messages (an exception may echo its input) and on the judge's rationale (a
    model may quote the message), so that verdicts and logs never carry raw content. A run of
    `window` characters found verbatim in any secret is replaced; a secret shorter than the
    window is replaced wherever it occurs whole.
    """

    REPLACEMENT = "[content removed]"

    def __init__(self, secrets: Sequence[str | None], window: int = 12) -> None:
        self.window = window
        self._secrets = [s for s in secrets if s and len(s.strip()) >= 4]

    def with_secret(self, secret: str | None) -> Redactor:
        return Redactor([*self._secrets, secret], self.window)

    def __call__(self, text: str) -> str:
        if not text or not self._secrets:
            return text
        marked = bytearray(len(text))
        w = self.window
        for secret in self._secrets:
            if len(secret) < w:
                start = text.find(secret)
                while start >= 0:
                    marked[start : start + len(secret)] = b"\x01" * len(secret)
                    start = text.find(secret, start + 1)
                continue
            for i in range(0, max(len(text) - w + 1, 0)):
                if text[i : i + w] in secret:
                    marked[i : i + w] = b"\x01" * w
        if not any(marked):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if marked[i]:
                while i < len(text) and marked[i]:
                    i += 1
                out.append(self.REPLACEMENT)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


#: the stable error codes a failed stage reports in `Verdict.errors` ("<stage>: <code> ...")
ERROR_CODES = ("timeout", "model_unavailable", "dependency_down", "invalid_input",
               "worker_died", "stage_failed")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b[0-9a-f]{24,}\b")


def _unwrapped(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray wrapper (RayTaskError keeps it as `cause`)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def error_code(exc: BaseException) -> str:
    inner = _unwrapped(exc)
    if isinstance(inner, TimeoutError | concurrent.futures.TimeoutError):
        return "timeout"
    if isinstance(inner, ModelUnavailable):
        return "model_unavailable"
    if isinstance(inner, DependencyError):
        return "dependency_down"
    if isinstance(inner, UserError):
        return "invalid_input"
    if any(k in type(exc).__name__ for k in ("ActorDied", "ActorError", "ActorUnavailable",
                                             "WorkerCrashed", "NodeDied")):
        return "worker_died"
    return "stage_failed"


def sanitize(text: str, limit: int = 200) -> str:
    """One short line: no terminal colour codes, addresses, actor or object ids, newlines."""
    text = _ANSI.sub("", text)
    text = _ADDRESS.sub("[address]", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_exception(exc: BaseException, redact: Callable[[str], str]) -> str:
    """`<code> (<Type>)`, plus the message for our own errors (they quote sizes and limits,
    not content), sanitised and with content removed. Other exceptions' messages, which may
    hold tracebacks, addresses or the item itself, stay in the server log only."""
    inner = _unwrapped(exc)
    kind = re.sub(r"[^A-Za-z0-9_]", "", type(inner).__name__)[:60] or "Exception"
    head = f"{error_code(exc)} ({kind})"
    if isinstance(inner, ChildguardError):
        msg = sanitize(redact(str(inner)))
        return f"{head}: {msg}" if msg else head
    return head


def timeout_error(timeout_s: float) -> str:
    return f"timeout: no answer within {timeout_s:g} s"


# -- stage inputs and results (plain, picklable: they travel between Ray deployments) ----------


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
    external_id: str | None = None
    source: str | None = None
    prepare_ms: float = 0.0

    @property
    def has_text(self) -> bool:
        return bool(self.text)

    @property
    def has_image(self) -> bool:
        return self.image is not None

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


# -- pluggable strategies -------------------------------------------------------------------


class GatePolicy(ABC):
    """Decides whether the cheap signals settle an item as benign (no judge call)."""

    name: ClassVar[str]

    @abstractmethod
    def evaluate(
        self, policy: Policy, item: PreparedItem, signals: SignalResult, *, probes_loaded: bool
    ) -> GateResult: ...


class ThresholdGate(GatePolicy):
    """The policy's gate: allow when every scored cheap signal is below `gate.allow_below`.

    Refuses to allow (sends to the judge) when the gate is disabled, when probes are required
    but not loaded, when a signal failed, or when a part of the item (text, image) was not
    scored by any signal: an unscored part is not known to be benign.
    """

    name = "threshold"

    def __init__(self, require_all_categories: bool = False) -> None:
        #: refuse to allow text unless every text category of the policy has a probe score
        #: (probes trained on data that lacks a category cannot vouch for it)
        self.require_all_categories = require_all_categories

    def evaluate(
        self, policy: Policy, item: PreparedItem, signals: SignalResult, *, probes_loaded: bool
    ) -> GateResult:
        spec = policy.spec.gate
        if not spec.enabled:
            return GateResult(reason="gate disabled in the policy")
        if spec.require_probes and not probes_loaded:
            return GateResult(reason="no probes loaded; the gate needs them (require_probes)")
        if not signals.ok:
            return GateResult(reason="signals failed")
        failed = [s.name for s in signals.signals if s.status is Status.ERROR]
        if failed:
            return GateResult(reason=f"signal(s) failed: {', '.join(sorted(set(failed)))}")
        if signals.rule_hits:
            # a rule hit is the policy authors' floor: the judge always reads the item
            return GateResult(reason="policy rule(s) hit: "
                              + ", ".join(h.rule for h in signals.rule_hits))
        if item.has_text and not signals.text_covered:
            return GateResult(reason="the text was not scored by any probe")
        if item.has_image and not signals.image_covered:
            return GateResult(reason="the image was not scored by any signal")
        if self.require_all_categories and item.has_text:
            missing = [
                c.code for c in policy.spec.categories
                if "text" in c.applies_to and c.code not in signals.probe_scores
            ]
            if missing:
                return GateResult(reason=f"no probe for {', '.join(missing)}")
        scored = [s for s in signals.signals if s.score is not None and s.status is Status.OK]
        if not scored:
            return GateResult(reason="no scored signals")
        top = max(scored, key=lambda s: s.score or 0.0)
        top_score = float(top.score or 0.0)
        label = f"{top.name}/{top.category}" if top.category else top.name
        if top_score >= spec.allow_below:
            return GateResult(
                reason=f"{label} scored {top_score:.3f} >= {spec.allow_below:g}",
                max_score=top_score,
            )
        return GateResult(
            allowed=True,
            reason=(
                f"all {len(scored)} cheap signals below {spec.allow_below:g} "
                f"(highest {label} {top_score:.3f})"
            ),
            max_score=top_score,
        )


@dataclass(frozen=True)
class CombinedScore:
    score: float
    source: str
    rationale: str = ""


@dataclass(frozen=True)
class Combination:
    """Per-category scores, plus reasons to send the item to at least review regardless."""

    scores: dict[str, CombinedScore]
    escalations: tuple[str, ...] = ()


class ScoreCombiner(ABC):
    """Turns probe scores and the judge's answer into one score per policy category.

    Swappable so evaluation can plug in a calibrated combination (`StackedCombiner`) without
    touching the cascade.
    """

    name: ClassVar[str]

    @abstractmethod
    def combine(
        self,
        policy: Policy,
        codes: Sequence[str],
        *,
        probe_scores: Mapping[str, float],
        judge: JudgeOutput | None,
        signals: Sequence[Signal],
        item: PreparedItem,
    ) -> Combination: ...


class JudgeFirstCombiner(ScoreCombiner):
    """Default: the judge's score when the item was judged, else the probe score.

    The judge's per-category score is `category_scores[code]` when given; otherwise its
    `violation` probability counts for the category it named. A judge that reports a violation
    without naming a known category cannot be attributed: the item goes to review.

    Uncategorised image-safety signals (nudity, NSFW) say nothing about age, which only CLIP
    concepts or a human can judge; a strong one sends an image to review instead of allowing it.
    """

    name = "judge_first"

    def __init__(self, image_review_at: float = 0.8) -> None:
        self.image_review_at = image_review_at

    def combine(
        self,
        policy: Policy,
        codes: Sequence[str],
        *,
        probe_scores: Mapping[str, float],
        judge: JudgeOutput | None,
        signals: Sequence[Signal],
        item: PreparedItem,
    ) -> Combination:
        scores: dict[str, CombinedScore] = {}
        escalations: list[str] = []
        judged = judge is not None and judge.status is Status.OK
        for code in codes:
            if judged and judge is not None:
                scores[code] = CombinedScore(_clip01(judge_score(judge, code)), "judge")
            elif code in probe_scores:
                scores[code] = CombinedScore(_clip01(probe_scores[code]), "probe")
        if judged and judge is not None:
            named = judge.category in codes or any(c in codes for c in judge.category_scores)
            lowest_review = min(policy.thresholds()[c].review for c in codes) if codes else 0.5
            if not named and judge.violation >= lowest_review:
                escalations.append(
                    f"the judge reported a violation (p={judge.violation:.2f}) without naming a "
                    "policy category"
                )
        if item.has_image:
            for sig in signals:
                if (
                    sig.category is None
                    and sig.score is not None
                    and sig.status is Status.OK
                    and sig.score >= self.image_review_at
                    and not sig.name.startswith(("probe.", "clip."))
                ):
                    escalations.append(
                        f"image signal {sig.name} scored {sig.score:.2f} >= "
                        f"{self.image_review_at:g}; "
                        "whether a minor is involved needs a human"
                    )
        return Combination(scores=scores, escalations=tuple(escalations))


class MaxCombiner(JudgeFirstCombiner):
    """The higher of the probe and the judge score per category (policy `judge.combine: max`).

    Why: the two models fail differently. The probes are trained on labelled data and know the
    patterns it holds (grooming scripts, sextortion threats, age words next to sexual text);
    the judge reads the policy and can catch what no training item showed. Replacing the probe
    with a small judge's score threw away most of the probes' recall (grooming recall
    0.08 with `judge_first`, docs/quality.md); taking the maximum keeps both, and the calibrated
    thresholds then hold the false positive rate. Escalations are those of `JudgeFirstCombiner`.
    """

    name = "max"

    def combine(
        self,
        policy: Policy,
        codes: Sequence[str],
        *,
        probe_scores: Mapping[str, float],
        judge: JudgeOutput | None,
        signals: Sequence[Signal],
        item: PreparedItem,
    ) -> Combination:
        base = super().combine(policy, codes, probe_scores=probe_scores, judge=judge,
                               signals=signals, item=item)
        scores = dict(base.scores)
        for code, p in probe_scores.items():
            if code not in codes:
                continue
            p = _clip01(p)
            have = scores.get(code)
            if have is None or p > have.score:
                scores[code] = CombinedScore(p, "probe")
        return Combination(scores=scores, escalations=base.escalations)


class StackedCombiner(MaxCombiner):
    """A fitted combination per category (policy `judge.combine: stacked`, weights from
    calibration.yaml): logistic regression on the probe's and the judge's logits, fitted on a
    calib split by `childguard eval calibrate --stacker`.

    Why: with `max` the judge can only raise a score, so it adds false alarms and no recall on
    items the probes already flag; a fitted combination lets a confident "no" from the judge
    lower a probe's score (and a confident "yes" raise it) by as much as the calib split shows
    it is worth. Categories without weights (too few calib positives) fall back to `max`;
    rule floors still apply after combining, so the judge never lowers an item below one.
    """

    name = "stacked"

    def combine(
        self,
        policy: Policy,
        codes: Sequence[str],
        *,
        probe_scores: Mapping[str, float],
        judge: JudgeOutput | None,
        signals: Sequence[Signal],
        item: PreparedItem,
    ) -> Combination:
        base = super().combine(policy, codes, probe_scores=probe_scores, judge=judge,
                               signals=signals, item=item)
        weights = policy.spec.judge.stacker
        judged = judge is not None and judge.status is Status.OK
        scores = dict(base.scores)
        for code in codes:
            w = weights.get(code)
            if w is None or code not in probe_scores:
                continue
            j = judge_score(judge, code) if judged and judge is not None else None
            scores[code] = CombinedScore(_clip01(w.score(probe_scores[code], j)), "stacked")
        return Combination(scores=scores, escalations=base.escalations)


def judge_score(judge: JudgeOutput, code: str) -> float:
    """The judge's score for one category: its per-category score when given, else its
    violation probability for the category it named, else 0."""
    if code in judge.category_scores:
        return float(judge.category_scores[code])
    if judge.category == code:
        return float(judge.violation)
    return 0.0


COMBINERS: dict[str, type[ScoreCombiner]] = {
    JudgeFirstCombiner.name: JudgeFirstCombiner, MaxCombiner.name: MaxCombiner,
    StackedCombiner.name: StackedCombiner,
}


def _clip01(x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"score is not a finite number ({x!r})")
    return min(1.0, max(0.0, x))


# -- the pipeline -----------------------------------------------------------------------------


class Pipeline:
    """The cascade. Build it with `from_settings`; components given explicitly are used as is
    (`None` means the component is absent, e.g. no hash banks, no OCR)."""

    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        judge: Judge | None,
        normalizer: Callable[[str], str],
        hashes: HashChecker | None = None,
        text_embedder: TextEmbedder | None = None,
        image_embedder: ImageEmbedder | None = None,
        image_safety: ImageSignalSource | Sequence[ImageSignalSource] | None = None,
        ocr: Ocr | None = None,
        probes: ProbeModel | None = None,
        gate_policy: GatePolicy | None = None,
        combiner: ScoreCombiner | None = None,
        media_loader: Callable[[str], bytes | None] | None = None,
        concept_calibrator: Callable[[str, float], float] | None = None,
        probe_context_messages: int | None = None,
        unavailable: Mapping[str, str] | None = None,
        stage_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.policy = policy
        self.judge = judge
        self.normalize = normalizer
        self.hashes = hashes
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        if image_safety is None:
            self.image_safety: tuple[ImageSignalSource, ...] = ()
        elif isinstance(image_safety, ImageSignalSource):
            self.image_safety = (image_safety,)
        else:
            self.image_safety = tuple(image_safety)
        self.ocr = ocr
        self.probes = probes
        self.gate_policy = gate_policy or ThresholdGate()
        self.combiner = combiner or COMBINERS[policy.spec.judge.combine]()
        self.media_loader = media_loader
        #: (category code, CLIP cosine similarity) -> calibrated probability; None = uncalibrated
        self.concept_calibrator = concept_calibrator
        #: also score the last N context messages plus the message as one text ("conversation"),
        #: as `eval train-probes` trains on them (default: settings.models.probe_context_messages)
        self.probe_context_messages = (
            settings.models.probe_context_messages if probe_context_messages is None
            else probe_context_messages
        )
        self.unavailable: dict[str, str] = dict(unavailable or {})
        if image_embedder is None and "clip" not in self.unavailable:
            self.unavailable["clip"] = UNAVAILABLE
        if probes is None and "probes" not in self.unavailable:
            self.unavailable["probes"] = UNAVAILABLE
        if judge is None and "judge" not in self.unavailable:
            self.unavailable["judge"] = DISABLED
        if hashes is None and "hashing" not in self.unavailable:
            self.unavailable["hashing"] = DISABLED
        self.stage_timeout_s = (
            settings.serve.stage_timeout_s if stage_timeout_s is None else stage_timeout_s
        )
        if probes is not None and text_embedder is not None:
            self._check_probe_embedder(probes, text_embedder)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # CPU models are not assumed thread-safe: a timed-out call may still be running in its
        # worker thread, and the next call must not enter the same model concurrently (it waits,
        # and times out in turn -> review, which is the fail-closed outcome we want)
        self._model_lock = {name: threading.Lock() for name in ("hash", "signals", "judge")}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        policy: Policy | None = None,
        judge: Judge | None = None,
        hashes: HashChecker | None = None,
        text_embedder: TextEmbedder | None = None,
        image_embedder: ImageEmbedder | None = None,
        image_safety: ImageSignalSource | Sequence[ImageSignalSource] | None = None,
        ocr: Ocr | None = None,
        probes: ProbeModel | None = None,
        gate_policy: GatePolicy | None = None,
        combiner: ScoreCombiner | None = None,
        media_loader: Callable[[str], bytes | None] | None = None,
        concept_calibrator: Callable[[str, float], float] | None = None,
        probe_context_messages: int | None = None,
        engine: Any = None,
        with_judge: bool = True,
    ) -> Pipeline:
        """Build every component not given from `settings`.

        Required models (judge, text embedder) that cannot load raise `ModelUnavailable` (start-up
        fails loudly). Optional ones (CLIP weights, trained probes, image-safety detectors, OCR)
        are recorded as unavailable and named in every verdict's `model_versions`. `engine` is
        the SQLAlchemy engine holding the hash banks (default: `settings.db_url`, migrated).
        `with_judge=False` leaves the LLM stage out (evaluation's `--judge none`): the verdict
        then rests on hashes and probes, and an item they cannot score goes to review.
        """
        from childguard.normalize import normalize_text

        unavailable: dict[str, str] = {}
        if policy is None:
            # policy.yaml + the thresholds `childguard eval calibrate` wrote beside it, if any
            policy = load_calibrated_policy(
                resolve_policy_path(settings.policy, settings.policies_dir)
            )
        if judge is None and with_judge:
            from childguard.models.judge import build_judge

            judge = build_judge(settings, policy)
        if hashes is None:
            hashes = _build_hashes(settings, engine)
        if text_embedder is None:
            from childguard.models.embedders import build_text_embedder

            text_embedder = build_text_embedder(settings)
        if image_embedder is None:
            try:
                from childguard.models.embedders import OpenClipEmbedder

                image_embedder = OpenClipEmbedder.from_settings(settings)
            except ModelUnavailable as exc:
                log.warning("CLIP unavailable, image decisions use the other signals: %s", exc)
                unavailable["clip"] = UNAVAILABLE
        if image_safety is None:
            if settings.models.image_safety:
                image_safety = _build_image_safety(settings, unavailable)
            else:
                unavailable["image_safety"] = DISABLED
        if ocr is None:
            if settings.models.ocr:
                try:
                    from childguard.models.ocr import RapidOcr

                    ocr = RapidOcr.from_settings(settings)
                except ModelUnavailable as exc:
                    log.warning("OCR unavailable: %s", exc)
                    unavailable["ocr"] = UNAVAILABLE
            else:
                unavailable["ocr"] = DISABLED
        if probes is None:
            from childguard.models.probes import ProbeSet

            loaded = None
            for key in embedder_keys(text_embedder):
                loaded = ProbeSet.load_default(settings, embedder=key)
                if loaded is not None:
                    break
            if loaded is None:
                log.warning(
                    "no trained probes for text embedder %s in %s; the gate judges everything",
                    text_embedder.model_version, settings.probes_dir,
                )
            probes = loaded
        return cls(
            settings=settings,
            policy=policy,
            judge=judge,
            normalizer=normalize_text,
            hashes=hashes,
            text_embedder=text_embedder,
            image_embedder=image_embedder,
            image_safety=image_safety,
            ocr=ocr,
            probes=probes,
            gate_policy=gate_policy,
            combiner=combiner,
            media_loader=media_loader,
            concept_calibrator=concept_calibrator,
            probe_context_messages=probe_context_messages,
            unavailable=unavailable,
        )

    def use_probes(self, probes: ProbeModel) -> None:
        """Score text with `probes` from now on (evaluation swaps in out-of-fold probe sets).
        They must fit the text embedder, as at construction."""
        if self.text_embedder is not None:
            self._check_probe_embedder(probes, self.text_embedder)
        self.probes = probes
        self.unavailable.pop("probes", None)

    def _check_probe_embedder(self, probes: ProbeModel, embedder: TextEmbedder) -> None:
        """Probes only mean something on the embedder they were trained on."""
        pdim = getattr(probes, "dim", None)
        edim = getattr(embedder, "dim", None)
        if pdim is not None and edim is not None and int(pdim) != int(edim):
            raise ModelUnavailable(
                f"probes {probe_version(probes)} expect {pdim}-dimensional embeddings from "
                f"{probes.embedder!r}, but the text embedder {embedder.model_version!r} gives "
                f"{edim}; retrain the probes (childguard eval train-probes) or configure the "
                "matching embedder"
            )
        if probes.embedder not in embedder_keys(embedder):
            log.warning(
                "probes %s were trained on embedder %r; the text embedder is %r",
                probe_version(probes), probes.embedder, embedder.model_version,
            )

    def close(self, wait_s: float | None = None) -> None:
        """Release the judge. A timed-out judge call may still be running on its worker thread:
        closing the model under it would crash the process, so wait for it (up to `wait_s`,
        default the stage timeout) and leave the model open if it does not finish."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self.judge is not None:
            lock = self._model_lock["judge"]
            wait = self.stage_timeout_s if wait_s is None else wait_s
            if lock.acquire(timeout=wait):
                try:
                    self.judge.close()
                finally:
                    lock.release()
            else:
                log.warning("the judge is still busy after %g s; leaving it open", wait)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model_versions(self) -> dict[str, str]:
        """Every configured model and its version, and the unavailable/disabled ones."""
        versions = dict(self.unavailable)
        if self.judge is not None:
            versions["judge"] = self.judge.model_version
        if self.text_embedder is not None:
            versions["text_embedder"] = self.text_embedder.model_version
        if self.probes is not None:
            versions["probes"] = probe_version(self.probes)
        if self.image_embedder is not None:
            versions["clip"] = self.image_embedder.model_version
        for src in self.image_safety:
            versions[src.name] = src.model_version
        if self.ocr is not None:
            versions["ocr"] = self.ocr.model_version
        return versions

    # -- stage 0: prepare --------------------------------------------------------------------
    def prepare(self, item: ContentItem) -> PreparedItem:
        """Input checks, image decode, text normalisation. Raises `UserError` for bad input."""
        t0 = time.perf_counter()
        limits = self.limits
        text = check_text(item.text, limits) if item.text is not None else None
        if len(item.context) > limits.max_context_messages:
            raise ContentTooLarge(
                f"context has {len(item.context)} messages; at most "
                f"{limits.max_context_messages} are allowed"
            )
        for i, msg in enumerate(item.context):
            check_text(msg.text, limits, field=f"context[{i}].text")
        total_context = sum(len(m.text) for m in item.context)
        if total_context > 4 * limits.max_text_chars:
            raise ContentTooLarge(
                f"context has {total_context} characters in total; at most "
                f"{4 * limits.max_text_chars} are allowed"
            )
        image_bytes = item.image
        if image_bytes is None and item.image_ref is not None:
            if self.media_loader is None:
                raise InvalidContent(
                    "image_ref was given but this pipeline cannot resolve stored media; send the "
                    "image bytes (base64 'image') instead"
                )
            image_bytes = self.media_loader(item.image_ref)
            if image_bytes is None:
                raise InvalidContent(f"image_ref {item.image_ref!r} does not name a stored image")
        decoded = decode_image(image_bytes, limits) if image_bytes is not None else None
        normalized = self.normalize(text) if text is not None else None
        return PreparedItem(
            item_id=item.id,
            text=text,
            normalized=normalized,
            context=tuple(item.context),
            image_bytes=image_bytes,
            image=decoded.image if decoded else None,
            image_format=decoded.format if decoded else None,
            image_size=(decoded.width, decoded.height) if decoded else None,
            external_id=item.external_id,
            source=item.source,
            prepare_ms=_ms(t0),
        )

    # -- stage 1: hash match -----------------------------------------------------------------
    def hash_stage(self, item: PreparedItem) -> HashResult:
        """Match the image against the hash banks. Never raises."""
        if item.image_bytes is None:
            return HashResult(status=Status.SKIPPED, note="no image")
        if self.hashes is None:
            return HashResult(status=Status.SKIPPED, note="no hash banks configured")
        t0 = time.perf_counter()
        try:
            with self._model_lock["hash"]:
                check = self.hashes.check(item.image_bytes)
            return HashResult(
                matches=tuple(check.matches),
                decisive=check.decisive,
                suppressed=tuple(check.suppressed),
                hashes=dict(check.hashes),
                pdq_quality=check.pdq_quality,
                pdq_used=check.pdq_used,
                note=check.note,
                elapsed_ms=_ms(t0),
                versions={"hashing": "pdq+md5+sha256"},
            )
        except Exception as exc:
            return self._stage_exception(HashResult, item, exc, t0)

    # -- stage 2: cheap signals --------------------------------------------------------------
    def signal_stage(self, item: PreparedItem) -> SignalResult:
        """Probes on the text, CLIP concepts, image-safety detectors, OCR. Never raises."""
        return self.signal_stage_batch([item])[0]

    def signal_stage_batch(self, items: Sequence[PreparedItem]) -> list[SignalResult]:
        """The signal stage for several items, with one embedder call for all their texts.
        A failure fails every item of the batch (closed)."""
        if not items:
            return []
        t0 = time.perf_counter()
        try:
            with self._model_lock["signals"]:
                results = self._signals(items)
        except Exception as exc:
            elapsed = _ms(t0) / len(items)
            return [self._stage_exception(SignalResult, it, exc, None, elapsed) for it in items]
        return results

    def _signals(self, items: Sequence[PreparedItem]) -> list[SignalResult]:
        t_batch = time.perf_counter()
        per_item: list[dict[str, Any]] = []
        # (item index, part label, normalised text) for one batched embedder call
        texts: list[tuple[int, str, str]] = []
        for idx, item in enumerate(items):
            state: dict[str, Any] = {
                "signals": [], "probe": {}, "ocr": None, "versions": {}, "image_covered": False,
            }
            per_item.append(state)
            if item.normalized:
                texts.append((idx, "text", item.normalized))
                if self.probe_context_messages > 0 and item.context:
                    recent = [m.text for m in item.context[-self.probe_context_messages :]]
                    joined = self.normalize(" \n ".join([*recent, item.text or ""]))
                    texts.append((idx, "conversation", joined))
            if item.image is not None:
                self._image_signals(item.image, state)
                if state["ocr"]:
                    texts.append((idx, "ocr", self.normalize(state["ocr"])))
            state["rules"] = self._rule_signals(item, state)
        text_covered: set[int] = set()
        if texts and self.text_embedder is not None:
            t0 = time.perf_counter()
            embs = self.text_embedder.embed_texts([t for _, _, t in texts])
            embed_ms = _ms(t0) / len(texts)
            for idx, _, _ in texts:
                per_item[idx]["versions"]["text_embedder"] = self.text_embedder.model_version
            if self.probes is not None:
                t0 = time.perf_counter()
                preds = self.probes.predict(np.asarray(embs))
                probe_ms = _ms(t0) / len(texts)
                for row, (idx, label, _) in enumerate(texts):
                    state = per_item[idx]
                    state["versions"]["probes"] = probe_version(self.probes)
                    text_covered.add(idx)
                    for code, arr in preds.items():
                        score = _clip01(float(np.asarray(arr).reshape(-1)[row]))
                        state["signals"].append(Signal(
                            name=f"probe.{label}", category=code, score=score,
                            model=probe_version(self.probes),
                            elapsed_ms=round(embed_ms + probe_ms, 3),
                        ))
                        state["probe"][code] = max(score, state["probe"].get(code, 0.0))
        batch_ms = _ms(t_batch) / len(items)
        results = []
        for idx, state in enumerate(per_item):
            results.append(SignalResult(
                signals=tuple(state["signals"]),
                probe_scores=dict(state["probe"]),
                text_covered=idx in text_covered and items[idx].has_text,
                image_covered=bool(state["image_covered"]),
                ocr_text=state["ocr"],
                rule_hits=state["rules"],
                elapsed_ms=round(batch_ms, 3),
                versions=dict(state["versions"]),
            ))
        return results

    def _rule_signals(self, item: PreparedItem, state: dict[str, Any]) -> tuple[RuleHit, ...]:
        """The policy's rules on the message, its conversation and OCR text: a `rule.<id>`
        signal per hit (no score: a rule is a floor, not a probability; `rules.py`)."""
        rules = self.policy.rules
        if not len(rules):
            return ()
        t0 = time.perf_counter()
        hits = rules.match(item.text, context=[m.text for m in item.context],
                           ocr_text=state["ocr"])
        elapsed = _ms(t0)
        for h in hits:
            state["signals"].append(Signal(
                name=f"rule.{h.rule}", category=h.category, model="policy-rules",
                elapsed_ms=round(elapsed, 3),
                detail={"floor": h.floor, "where": h.where, "lists": ",".join(h.lists)},
            ))
        return hits

    def _image_signals(self, image: Image.Image, state: dict[str, Any]) -> None:
        signals: list[Signal] = state["signals"]
        versions: dict[str, str] = state["versions"]
        if self.ocr is not None:
            t0 = time.perf_counter()
            found = (self.ocr.read(image) or "").strip()
            versions["ocr"] = self.ocr.model_version
            signals.append(Signal(
                name="ocr", model=self.ocr.model_version, elapsed_ms=_ms(t0),
                detail={"chars": len(found)},
            ))
            if found:
                state["ocr"] = check_text(found[: self.limits.max_text_chars], self.limits,
                                          field="ocr text")
        for src in self.image_safety:
            t0 = time.perf_counter()
            produced = list(src.signals(image))
            versions[src.name] = src.model_version
            for s in produced:
                signals.append(s)
                if s.score is not None and s.status is Status.OK:
                    state["image_covered"] = True
        if self.image_embedder is not None:
            t0 = time.perf_counter()
            emb = self.image_embedder.embed_images([image])
            versions["clip"] = self.image_embedder.model_version
            concept_fn = getattr(self.image_embedder, "concept_scores", None)
            if concept_fn is not None:
                for cat in self.policy.spec.categories:
                    if not cat.clip_concepts or "image" not in cat.applies_to:
                        continue
                    sims = np.asarray(concept_fn(emb, list(cat.clip_concepts))).reshape(-1)
                    cosine = float(sims.max())
                    if not math.isfinite(cosine):
                        raise ValueError("CLIP concept similarity is not a finite number")
                    # a cosine similarity is not a probability: it only becomes a score (for
                    # the gate and the thresholds) through a calibration fitted on labelled data
                    score = None
                    if self.concept_calibrator is not None:
                        score = _clip01(self.concept_calibrator(cat.code, cosine))
                        state["probe"][cat.code] = max(score, state["probe"].get(cat.code, 0.0))
                        state["image_covered"] = True
                    signals.append(Signal(
                        name="clip.concept", category=cat.code, score=score,
                        model=self.image_embedder.model_version, elapsed_ms=_ms(t0),
                        detail={"cosine": round(cosine, 4), "calibrated": score is not None},
                    ))

    # -- stage 3: gate -----------------------------------------------------------------------
    def gate(self, item: PreparedItem, signals: SignalResult) -> GateResult:
        """Whether the cheap signals settle the item as benign. Never raises."""
        t0 = time.perf_counter()
        try:
            result = self.gate_policy.evaluate(
                self.policy, item, signals, probes_loaded=self.probes is not None
            )
        except Exception as exc:
            return self._stage_exception(GateResult, item, exc, t0)
        return GateResult(
            allowed=result.allowed, reason=result.reason, max_score=result.max_score,
            status=result.status, error=result.error, elapsed_ms=_ms(t0),
        )

    # -- stage 4: judge ----------------------------------------------------------------------
    def judge_input(self, item: PreparedItem, signals: SignalResult | None) -> JudgeInput:
        """What the judge sees: original and normalised text, context, OCR text."""
        return JudgeInput(
            item_id=item.item_id,
            text=item.text,
            normalized=item.normalized,
            context=item.context,
            ocr_text=signals.ocr_text if signals is not None else None,
            has_image=item.has_image,
        )

    def judge_stage(self, item: PreparedItem, signals: SignalResult | None) -> JudgeResult:
        """Ask the policy-prompted judge. Never raises; a judge error is `status=error`."""
        return self.judge_stage_batch([item], [signals])[0]

    def judge_stage_batch(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult | None]
    ) -> list[JudgeResult]:
        if not items:
            return []
        if self.judge is None:
            return [JudgeResult(status=Status.SKIPPED) for _ in items]
        t0 = time.perf_counter()
        inputs = [self.judge_input(it, s) for it, s in zip(items, signals, strict=True)]
        try:
            with self._model_lock["judge"]:
                outputs = (
                    [self.judge.judge(inputs[0])] if len(inputs) == 1
                    else self.judge.judge_batch(inputs)
                )
            if len(outputs) != len(inputs):
                raise RuntimeError(
                    f"judge returned {len(outputs)} answers for {len(inputs)} items"
                )
        except Exception as exc:
            elapsed = _ms(t0) / len(items)
            return [
                self._stage_exception(JudgeResult, it, exc, None, elapsed, s)
                for it, s in zip(items, signals, strict=True)
            ]
        elapsed = _ms(t0) / len(items)
        version = {"judge": self.judge.model_version}
        results = []
        for it, sig, out in zip(items, signals, outputs, strict=True):
            redact = self._redactor(it, sig)
            out = out.model_copy(update={"rationale": redact(out.rationale)})
            if out.status is not Status.OK:
                error = redact(out.error or "judge returned status=error without a reason")
                log.warning("judge error for item %s: %s", it.item_id, error)
                results.append(JudgeResult(
                    status=Status.ERROR, error=error, output=out, elapsed_ms=elapsed,
                    versions=version,
                ))
            else:
                results.append(JudgeResult(output=out, elapsed_ms=elapsed, versions=version))
        return results

    # -- stage 5: decide ---------------------------------------------------------------------
    def decide(
        self,
        item: PreparedItem,
        *,
        hashes: HashResult | None = None,
        signals: SignalResult | None = None,
        gate: GateResult | None = None,
        judge: JudgeResult | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> Verdict:
        """Turn the stage results into the verdict. Any failed stage gives review."""
        t0 = time.perf_counter()
        try:
            verdict = self._decide(item, hashes, signals, gate, judge, dict(timings or {}))
        except Exception as exc:
            error = describe_exception(exc, self._redactor(item, signals))
            self._log_failure("decide", item, error, exc)
            verdict = self._verdict(
                item, Decision.REVIEW, status=Status.ERROR,
                rationale="stage 'decide' failed; sent to human review (fail closed)",
                errors=(f"decide: {error}",), hashes=hashes, signals=signals, judge=judge,
                timings=dict(timings or {}),
            )
        timings_out = dict(verdict.timings_ms)
        timings_out["decide"] = _ms(t0)
        timings_out.setdefault("total", round(sum(
            v for k, v in timings_out.items() if k in STAGES
        ), 3))
        verdict = verdict.model_copy(update={"timings_ms": timings_out})
        log.info(
            "classified item=%s decision=%s status=%s judged=%s report=%s",
            verdict.item_id, verdict.decision.value, verdict.status.value, verdict.judged,
            verdict.report,
        )
        return verdict

    def _decide(
        self,
        item: PreparedItem,
        hashes: HashResult | None,
        signals: SignalResult | None,
        gate: GateResult | None,
        judge: JudgeResult | None,
        timings: dict[str, float],
    ) -> Verdict:
        # 1. a decisive hash hit blocks; the models were skipped
        if hashes is not None and hashes.ok and hashes.decisive is not None:
            return self._hash_verdict(item, hashes, timings)

        # 2. any failed stage: fail closed
        errors = tuple(
            f"{r.stage}: {r.error or 'failed'}"
            for r in (hashes, signals, gate, judge)
            if r is not None and r.status is Status.ERROR
        )
        if signals is not None and signals.ok:
            # a detector that reports its own failure: the item is not known to be safe
            errors += tuple(f"signals: {name} failed" for name in signals.failed_signals)
        if errors:
            return self._error_verdict(item, errors, hashes, signals, judge, timings)

        codes = self._applicable_codes(item, signals)
        probe_scores = signals.probe_scores if signals is not None else {}
        gated = gate is not None and gate.ok and gate.allowed
        judged = judge is not None and judge.ok and judge.output is not None
        judge_out = judge.output if judged and judge is not None else None
        combo = self.combiner.combine(
            self.policy, codes,
            probe_scores=probe_scores,
            judge=judge_out,
            signals=signals.signals if signals is not None else (),
            item=item,
        )
        hits = signals.rule_hits if signals is not None else ()
        categories = self._floored(self._category_scores(codes, combo), hits)
        decision = _max_decision(*(c.decision for c in categories))
        notes: list[str] = []
        escalations = list(combo.escalations)
        if hashes is not None:
            quarantined = [m for m in hashes.matches if m.quarantined and not m.negative]
            if quarantined:
                escalations.append(
                    f"hash match in bank '{quarantined[0].bank}' is held back (quarantined)"
                )
            if hashes.suppressed:
                allow_banks = sorted({m.bank for m in hashes.matches if m.negative})
                notes.append(
                    f"hash hit in bank(s) {', '.join(sorted({m.bank for m in hashes.suppressed}))}"
                    f" suppressed by allowlist bank(s) {', '.join(allow_banks) or '?'}"
                )
        if not judged and not gated:
            # neither the judge nor the gate settled it: the probes alone may not allow
            covered = signals is not None and (
                (not item.has_text or signals.text_covered)
                and (not item.has_image or signals.image_covered)
            )
            if not covered or not categories:
                escalations.append("no model could score this item")
        if escalations and DECISION_RANK[decision] < DECISION_RANK[Decision.REVIEW]:
            decision = Decision.REVIEW
        report = any(
            c.decision is Decision.BLOCK and self.policy.spec.category(c.code).report
            for c in categories
        )
        # rationale a reviewer can read
        parts: list[str] = []
        flagged = sorted(
            (c for c in categories if c.decision is not Decision.ALLOW),
            key=_worst_first,
        )
        if gated and gate is not None and not flagged:
            parts.append(f"allowed by the cheap-signal gate: {gate.reason}; judge not called")
        elif flagged:
            parts.append(f"{decision.value}: " + "; ".join(
                f"{c.code} {c.score:.2f} ({c.source}, {c.rationale})" for c in flagged
            ))
        else:
            top = max(categories, key=lambda c: c.score, default=None)
            parts.append(
                f"{decision.value}: no category reached its review threshold"
                + (f" (highest {top.code} {top.score:.2f}, {top.source})" if top else "")
            )
        if gated and gate is not None and flagged:
            # the gate's bar (skip the judge) sits above a category's review threshold: the
            # probe score alone flags the item, without a judge call
            parts.append(f"judge not called (cheap-signal gate: {gate.reason})")
        if escalations:
            parts.append("sent to review: " + "; ".join(escalations))
        if judge_out is not None and judge_out.rationale:
            parts.append(f"judge: {judge_out.rationale}")
        if gate is not None and not gate.allowed and gate.reason:
            parts.append(f"not settled by the gate: {gate.reason}")
        if hits:
            parts.append("policy rules: " + "; ".join(f"{h.label()}: {h.why}" for h in hits))
        if report:
            parts.append("reportable category blocked: a report is due after human confirmation")
        parts.extend(notes)
        return self._verdict(
            item, decision, status=Status.OK, rationale=". ".join(parts), categories=categories,
            report=report, judged=judged, hashes=hashes, signals=signals, judge=judge,
            timings=timings,
        )

    def _category_scores(self, codes: Sequence[str], combo: Combination) -> list[CategoryScore]:
        """One `CategoryScore` per applicable code the combiner scored, decided by the policy's
        thresholds."""
        thresholds = self.policy.thresholds()
        categories: list[CategoryScore] = []
        for code in codes:
            if code not in combo.scores:
                continue
            cs = combo.scores[code]
            th = thresholds[code]
            decision = th.decide(cs.score)
            why = cs.rationale or _threshold_phrase(cs.score, decision, th.review, th.block)
            categories.append(CategoryScore(
                code=code, score=round(cs.score, 6), decision=decision, rationale=why,
                source=cs.source,
            ))
        return categories

    def _floored(self, categories: list[CategoryScore],
                 hits: Sequence[RuleHit]) -> list[CategoryScore]:
        """Categories raised to the floors of the rules that fired (`rules.py`): a `review`
        floor puts the score at least at the category's review threshold, `block` at its block
        threshold; a `judge` floor only kept the item from the gate. The models (judge
        included) can raise a category above a floor, never lower it below one."""
        floors: dict[str, RuleHit] = {}
        for h in hits:
            if h.floor == "judge" or h.category is None \
                    or h.category not in self.policy.spec.codes:
                continue
            have = floors.get(h.category)
            if have is None or FLOOR_RANK[h.floor] > FLOOR_RANK[have.floor]:
                floors[h.category] = h
        if not floors:
            return categories
        thresholds = self.policy.thresholds()
        scored = {c.code for c in categories}
        unscored = [CategoryScore(code=code, score=0.0, decision=Decision.ALLOW, source="rule")
                    for code in floors if code not in scored]
        out: list[CategoryScore] = []
        for c in [*categories, *unscored]:
            hit = floors.get(c.code)
            th = thresholds[c.code]
            bar = th.block if hit is not None and hit.floor == "block" else th.review
            if hit is None or c.score >= bar:
                out.append(c)
                continue
            out.append(CategoryScore(
                code=c.code, score=round(bar, 6), decision=th.decide(bar), source="rule",
                rationale=f"rule {hit.rule} sets at least {hit.floor} (model score "
                          f"{c.score:.2f})",
            ))
        return out

    def _error_verdict(
        self,
        item: PreparedItem,
        errors: tuple[str, ...],
        hashes: HashResult | None,
        signals: SignalResult | None,
        judge: JudgeResult | None,
        timings: dict[str, float],
    ) -> Verdict:
        """A failed stage: review (fail closed), with what the cheap signals scored.

        Why keep the scores: a reviewer deciding an item whose judge failed should see that the
        probes scored it 0.86 for sexual_minors, and the review queue and the evaluation rank
        it by that score (measured: a long positive whose judge call failed had no scores, so it
        ranked below every benign item in AUPRC). The scores do not change the decision: the
        item goes to review whatever they say (only review decisions reach the review queue, so
        not even a category at its block threshold blocks without a human); each category keeps
        the decision its threshold gives, for the reviewer and the per-category metrics."""
        failed = ", ".join(e.split(":", 1)[0] for e in errors)
        rationale = f"stage '{failed}' failed; sent to human review (fail closed)"
        categories: list[CategoryScore] = []
        if signals is not None and signals.ok and signals.probe_scores:
            codes = self._applicable_codes(item, signals)
            combo = self.combiner.combine(
                self.policy, codes, probe_scores=signals.probe_scores, judge=None,
                signals=signals.signals, item=item,
            )
            categories = self._category_scores(codes, combo)
        if signals is not None and signals.ok:
            categories = self._floored(categories, signals.rule_hits)
        if categories:
            top = sorted(categories, key=_worst_first)[:3]
            rationale += "; the signals that did run scored " + "; ".join(
                f"{c.code} {c.score:.2f} ({c.source}, {c.decision.value})" for c in top)
        return self._verdict(
            item, Decision.REVIEW, status=Status.ERROR, rationale=rationale,
            categories=categories, errors=errors, hashes=hashes, signals=signals, judge=judge,
            timings=timings,
        )

    def _hash_verdict(
        self, item: PreparedItem, hashes: HashResult, timings: dict[str, float]
    ) -> Verdict:
        m = hashes.decisive
        assert m is not None
        code = m.category
        report = False
        known = code is not None and code in self.policy.spec.codes
        if known and code is not None:
            report = self.policy.spec.category(code).report
        where = f"bank '{m.bank}' ({m.signal_type}, distance {m.distance}, entry {m.entry_id})"
        rationale = f"block: the image matched hash {where}"
        if code:
            rationale += f"; category {code}" + (" (reportable)" if report else "")
            if not known:
                rationale += f" (not a category of policy {self.policy.id})"
        rationale += "; models skipped"
        categories = []
        if code:
            categories.append(CategoryScore(
                code=code, score=1.0, decision=Decision.BLOCK, source="hash",
                rationale=f"matched {where}",
            ))
        return self._verdict(
            item, Decision.BLOCK, status=Status.OK, rationale=rationale, categories=categories,
            report=report, hashes=hashes, timings=timings,
        )

    def _applicable_codes(self, item: PreparedItem, signals: SignalResult | None) -> list[str]:
        kinds = set()
        if item.has_text or (signals is not None and signals.ocr_text):
            kinds.add("text")
        if item.has_image:
            kinds.add("image")
        return [c.code for c in self.policy.spec.categories if kinds & set(c.applies_to)]

    def _verdict(
        self,
        item: PreparedItem,
        decision: Decision,
        *,
        status: Status,
        rationale: str,
        categories: Sequence[CategoryScore] = (),
        report: bool = False,
        judged: bool = False,
        errors: tuple[str, ...] = (),
        hashes: HashResult | None = None,
        signals: SignalResult | None = None,
        judge: JudgeResult | None = None,
        timings: dict[str, float],
    ) -> Verdict:
        sig: list[Signal] = []
        if hashes is not None and (hs := hashes.signal()) is not None:
            sig.append(hs)
        if signals is not None:
            sig.extend(signals.signals)
        versions = dict(self.unavailable)
        for r in (hashes, signals, judge):
            if r is not None:
                versions.update(r.versions)
        if judged and judge is not None and judge.output is not None:
            out = judge.output
            if out.model:
                versions["judge"] = out.model
            # the judge's own per-category scores, whatever the combiner made of them, so a
            # reviewer (and `eval calibrate`) sees both models' opinions side by side
            sig.extend(
                Signal(name="judge", category=code, score=_clip01(score), model=out.model or None,
                       elapsed_ms=round(judge.elapsed_ms, 3))
                for code, score in sorted(out.category_scores.items())
            )
        return Verdict(
            item_id=item.item_id,
            decision=decision,
            status=status,
            categories=tuple(categories),
            signals=tuple(sig),
            hash_matches=hashes.matches if hashes is not None else (),
            rationale=rationale,
            report=report,
            judged=judged,
            policy_id=self.policy.id,
            policy_version=self.policy.version,
            model_versions=versions,
            timings_ms=timings,
            errors=errors,
            external_id=item.external_id,
            source=item.source,
        )

    # -- the whole cascade in-process --------------------------------------------------------
    def classify(self, item: ContentItem) -> Verdict:
        """Classify one item. Raises `UserError` for bad input; never for model trouble."""
        prepared = self.prepare(item)
        return self.run_prepared([prepared])[0]

    def classify_batch(self, items: Sequence[ContentItem]) -> list[Verdict]:
        """Classify several items, batching the embedder and judge calls. A bad item raises
        `UserError` naming its index before anything runs."""
        prepared = []
        for i, item in enumerate(items):
            try:
                prepared.append(self.prepare(item))
            except ChildguardError as exc:
                raise type(exc)(f"items[{i}] (id {item.id}): {exc}") from exc
        return self.run_prepared(prepared)

    def run_prepared(self, items: Sequence[PreparedItem]) -> list[Verdict]:
        """Stages 1-5 for prepared items, each stage bounded by the stage timeout."""
        n = len(items)
        timings: list[dict[str, float]] = [{"prepare": it.prepare_ms} for it in items]
        hash_results = [
            self._bounded("hash", HashResult, self.hash_stage, (it,), it) for it in items
        ]
        for t, h in zip(timings, hash_results, strict=True):
            if h.status is not Status.SKIPPED:
                t["hash"] = h.elapsed_ms
        # items the hash stage settled (or failed) go straight to decide
        todo = [i for i in range(n) if hash_results[i].ok or hash_results[i].status is
                Status.SKIPPED]
        todo = [i for i in todo if hash_results[i].decisive is None]
        signal_results: dict[int, SignalResult] = {}
        if todo:
            got = self._bounded_batch(
                "signals", SignalResult, self.signal_stage_batch, [items[i] for i in todo]
            )
            for i, r in zip(todo, got, strict=True):
                signal_results[i] = r
                timings[i]["signals"] = r.elapsed_ms
        gate_results: dict[int, GateResult] = {}
        to_judge: list[int] = []
        for i in todo:
            s = signal_results[i]
            if not s.ok or s.failed_signals:
                continue  # decided as an error (review) without spending a judge call
            g = self.gate(items[i], s)
            gate_results[i] = g
            timings[i]["gate"] = g.elapsed_ms
            if g.ok and not g.allowed:
                to_judge.append(i)
        judge_results: dict[int, JudgeResult] = {}
        if to_judge and self.judge is not None:
            got_j = self._bounded_batch(
                "judge", JudgeResult,
                lambda its: self.judge_stage_batch(its, [signal_results[i] for i in to_judge]),
                [items[i] for i in to_judge],
            )
            for i, jr in zip(to_judge, got_j, strict=True):
                judge_results[i] = jr
                timings[i]["judge"] = jr.elapsed_ms
        verdicts = []
        for i, it in enumerate(items):
            verdicts.append(self.decide(
                it, hashes=hash_results[i], signals=signal_results.get(i),
                gate=gate_results.get(i), judge=judge_results.get(i), timings=timings[i],
            ))
        return verdicts

    # -- helpers -----------------------------------------------------------------------------
    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="childguard-stage"
                )
            return self._executor

    def _bounded(
        self, stage: str, kind: type[_R], fn: Callable[..., _R], args: tuple[Any, ...],
        item: PreparedItem,
    ) -> _R:
        return self._bounded_batch(stage, kind, lambda its: [fn(*args)], [item])[0]

    def _bounded_batch(
        self,
        stage: str,
        kind: type[_R],
        fn: Callable[[list[PreparedItem]], list[_R]],
        items: Sequence[PreparedItem],
    ) -> list[_R]:
        """Run a stage on a worker thread, bounded by the stage timeout (scaled by the batch
        size). A timeout fails every item of the call (closed); the worker is left to finish."""
        items = list(items)
        timeout = self.stage_timeout_s * max(1, len(items))
        t0 = time.perf_counter()
        fut = self._pool().submit(fn, items)
        try:
            return fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            elapsed = _ms(t0) / max(1, len(items))
            error = timeout_error(timeout)
            for it in items:
                log.warning("stage %s timed out for item %s: %s", stage, it.item_id, error)
            return [kind.failed(error, elapsed) for _ in items]
        except Exception as exc:  # a stage method broke its never-raise promise
            elapsed = _ms(t0) / max(1, len(items))
            return [self._stage_exception(kind, it, exc, None, elapsed) for it in items]

    def _redactor(self, item: PreparedItem, signals: SignalResult | None = None) -> Redactor:
        red = item.redactor()
        if signals is not None and signals.ocr_text:
            red = red.with_secret(signals.ocr_text)
        return red

    def _stage_exception(
        self,
        kind: type[_R],
        item: PreparedItem,
        exc: BaseException,
        t0: float | None,
        elapsed_ms: float | None = None,
        signals: SignalResult | None = None,
    ) -> _R:
        error = describe_exception(exc, self._redactor(item, signals))
        self._log_failure(kind.stage, item, error, exc)
        elapsed = elapsed_ms if elapsed_ms is not None else (_ms(t0) if t0 is not None else 0.0)
        return kind.failed(error, elapsed)

    @staticmethod
    def _log_failure(stage: str, item: PreparedItem, error: str, exc: BaseException) -> None:
        # the traceback's frames (files, lines, code), never the exception message unredacted
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.warning("stage %s failed for item %s: %s\n%s", stage, item.item_id, error, frames)


def _threshold_phrase(score: float, decision: Decision, review: float, block: float) -> str:
    if decision is Decision.BLOCK:
        return f">= block threshold {block:g}"
    if decision is Decision.REVIEW:
        return f">= review threshold {review:g}"
    return f"< review threshold {review:g}"


def _build_hashes(settings: Settings, engine: Any) -> HashChecker | None:
    from childguard.hashing.service import HashService
    from childguard.store.db import make_engine
    from childguard.store.migrate import migrate

    if engine is None:
        engine = make_engine(settings.db_url)
        migrate(engine)
    service: HashChecker = HashService.from_settings(settings, engine)
    return service


def _build_image_safety(
    settings: Settings, unavailable: dict[str, str]
) -> list[ImageSignalSource]:
    from childguard.models import image_safety as mod

    sources: list[ImageSignalSource] = []
    for cls_name, key in (("NudeNetDetector", "nudenet"), ("OpenNsfwScorer", "opennsfw")):
        cls = getattr(mod, cls_name)
        try:
            sources.append(cls.from_settings(settings))
        except ModelUnavailable as exc:
            log.warning("image-safety model %s unavailable: %s", cls_name, exc)
            unavailable[getattr(cls, "name", key)] = UNAVAILABLE
    return sources
