"""Per-item predictions of an evaluation run: ids, labels, scores and decisions, never content.

This is the artifact every later step reads: metrics, calibration, `eval compare` (flipped ids)
and the notebook. Keeping it a flat JSONL of ids and numbers makes it safe to log to MLflow and
to attach to an issue.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from childguard.rules import FLOOR_RANK
from childguard.schema import Decision, Status, Verdict

PREDICTIONS_FILE = "predictions.jsonl"
INVALID = "invalid"  # the pipeline rejected the input (UserError): not a model decision


@dataclass(frozen=True)
class Prediction:
    id: str
    dataset: str
    labels: Mapping[str, int]
    scores: Mapping[str, float]
    category_decisions: Mapping[str, str]
    decision: str
    status: str
    judged: bool
    latency_ms: float
    split: str | None = None
    gate_score: float | None = None
    report: bool = False
    errors: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """Reached a human or was removed: review or block (an error is review: fail closed)."""
        return self.decision in (Decision.REVIEW.value, Decision.BLOCK.value)

    def score(self, code: str) -> float:
        return float(self.scores.get(code, 0.0))

    def category_flagged(self, code: str) -> bool:
        """Flagged for `code`: the item errored (it goes to review whatever its scores say:
        fail closed), or its own decision for `code` is review/block."""
        if self.status == Status.ERROR.value and self.flagged:
            return True
        return self.category_decisions.get(code) in (Decision.REVIEW.value, Decision.BLOCK.value)

    def category_blocked(self, code: str) -> bool:
        """Blocked for `code`: the item was blocked and its decision for `code` is block (an
        error verdict keeps its categories' threshold decisions but is never blocked)."""
        return (self.decision == Decision.BLOCK.value
                and self.category_decisions.get(code) == Decision.BLOCK.value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Prediction:
        return cls(**dict(d))


def gate_score_of(verdict: Verdict) -> float | None:
    """The highest probe score among the verdict's signals (what the gate looks at), if any."""
    scores = [s.score for s in verdict.signals
              if s.name.startswith("probe") and s.score is not None and s.status is Status.OK]
    return max(scores) if scores else None


def from_verdict(verdict: Verdict, *, dataset: str, labels: Mapping[str, int],
                 split: str | None, latency_ms: float) -> Prediction:
    return Prediction(
        id=verdict.item_id,
        dataset=dataset,
        labels=dict(labels),
        scores={c.code: float(c.score) for c in verdict.categories},
        category_decisions={c.code: c.decision.value for c in verdict.categories},
        decision=verdict.decision.value,
        status=verdict.status.value,
        judged=verdict.judged,
        latency_ms=latency_ms,
        split=split,
        gate_score=gate_score_of(verdict),
        report=verdict.report,
        errors=len(verdict.errors),
        extra=_model_scores(verdict),
    )


def _model_scores(verdict: Verdict) -> dict[str, Any]:
    """Each model's own per-category scores ({"probe": {...}, "judge": {...}}), before the
    combiner: what a calibrated combination is fitted on. Probe scores are the highest over the
    item's texts (message, conversation, OCR), as the pipeline takes them. Under "rules", the
    strongest review/block floor a policy rule set per category: such a category is reviewed
    (blocked) at any threshold, which calibration must know (`rule_floor`)."""
    out: dict[str, dict[str, Any]] = {}
    for s in verdict.signals:
        floor = s.detail.get("floor") if s.name.startswith("rule.") else None
        if s.category is not None and floor in ("review", "block"):
            rules = out.setdefault("rules", {})
            if FLOOR_RANK[str(floor)] > FLOOR_RANK.get(rules.get(s.category, "judge"), 0):
                rules[s.category] = floor
        if s.category is None or s.score is None or s.status is not Status.OK:
            continue
        kind = "probe" if s.name.startswith("probe") else "judge" if s.name == "judge" else None
        if kind is None:
            continue
        scores = out.setdefault(kind, {})
        scores[s.category] = max(float(s.score), scores.get(s.category, 0.0))
    return out


def rule_floor(pred: Prediction, code: str) -> str | None:
    """The review/block floor a policy rule set on `code` for this item, if any (recorded by
    runs since 2026-12-07 #6; older runs record none)."""
    rules = pred.extra.get("rules") or {}
    floor = rules.get(code)
    return str(floor) if floor else None


def write_predictions(preds: Iterable[Prediction], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for p in preds:
            fh.write(json.dumps(p.to_json(), sort_keys=True) + "\n")
    return path


def read_predictions(path: Path) -> list[Prediction]:
    with path.open(encoding="utf-8") as fh:
        return [Prediction.from_json(json.loads(line)) for line in fh if line.strip()]


def pool_predictions(runs: Iterable[Iterable[Prediction]]) -> list[Prediction]:
    """Several runs' predictions as one set, each item (dataset, id) once: from the first run
    that has it, except that a judged prediction replaces an unjudged one. Why: calibration
    pools an unjudged run (thresholds for every calib row) with a judged no-gate run (the
    stacker's rows); which one is named first must not decide whether the stacker sees the
    judge's scores."""
    pooled: dict[tuple[str, str], Prediction] = {}
    for preds in runs:
        for p in preds:
            have = pooled.get((p.dataset, p.id))
            if have is None or (p.judged and not have.judged):
                pooled[(p.dataset, p.id)] = p
    return list(pooled.values())
