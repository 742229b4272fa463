"""Pluggable strategies: the gate (does the cheap stage settle an item?) and the combiners
(probe, judge and stacked scores into one score per category).

Why separate: these are what quality work tunes. Evaluation swaps them without touching the
cascade, and each is a small class whose behaviour a unit test pins down.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from childguard.models.base import JudgeOutput
from childguard.pipeline.results import GateResult, PreparedItem, SignalResult
from childguard.policy import Policy
from childguard.schema import Signal, Status

__all__ = ["COMBINERS", "Combination", "CombinedScore", "GatePolicy", "JudgeFirstCombiner",
           "MaxCombiner", "ScoreCombiner", "StackedCombiner", "ThresholdGate", "clip01",
           "judge_score"]


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
                scores[code] = CombinedScore(clip01(judge_score(judge, code)), "judge")
            elif code in probe_scores:
                scores[code] = CombinedScore(clip01(probe_scores[code]), "probe")
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
            p = clip01(p)
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
            scores[code] = CombinedScore(clip01(w.score(probe_scores[code], j)), "stacked")
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


def clip01(x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"score is not a finite number ({x!r})")
    return min(1.0, max(0.0, x))

