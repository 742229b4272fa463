"""Threshold calibration with a split-conformal guarantee, and the file the pipeline reads.

Why conformal: a policy author states a target ("at least 98% of violating items reach a human
or are blocked") and needs thresholds that keep it on new data, not just on the data they were
fitted on. Split conformal gives that with no model assumptions: fit each threshold on one
split (calib) as an order statistic of that split's scores, and the target holds in expectation
for any new item exchangeable with the calib split. We report the guarantee the calib size
allows and the coverage actually observed on a held-back split.

- review threshold (per category): the k-th smallest positive score, k = floor(alpha (n+1)),
  alpha = 1 - recall target. P(a new positive scores below it) <= k/(n+1) <= alpha. It is the
  largest threshold with that guarantee, so it minimises the review rate.
- block threshold (per category): the j-th smallest negative score, j = ceil((1-beta)(n+1)),
  beta = the allowed rate of negatives blocked. P(a new negative is blocked) <= beta.
- gate threshold (`allow_below`): like the review threshold, on the highest probe score of
  items violating any category: the gate lets at most alpha_gate of them skip the judge.
  The end-to-end miss rate is then at most alpha_gate + alpha (union bound).

The result goes to `<policy dir>/calibration.yaml`, next to the policy it was fitted for, so
it is reviewed and versioned with the policy. The file format and its loader live in
`childguard.policy_calibration` (the pipeline's layer); they are re-exported here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from childguard.errors import UserError
from childguard.evaluation.predictions import Prediction, rule_floor
from childguard.policy import Policy
from childguard.policy_calibration import (
    CALIBRATION_FILE,
    Calibration,
    CategoryCalibration,
    GateCalibration,
    Targets,
    apply_calibration,
    calibration_path,
    load_calibrated_policy,
    load_calibration,
    write_calibration,
)

__all__ = [
    "CALIBRATION_FILE", "Calibration", "CategoryCalibration", "ConformalThreshold",
    "GateCalibration", "Targets", "apply_calibration", "calibrate", "calibration_path",
    "is_calib", "load_calibrated_policy", "load_calibration", "lower_threshold",
    "upper_threshold", "write_calibration",
]

_MIN_THRESHOLD = 1e-6  # Thresholds.review must be > 0


# -- conformal order statistics ---------------------------------------------------------------


@dataclass(frozen=True)
class ConformalThreshold:
    threshold: float
    guaranteed: float  # the guaranteed coverage (recall, or 1 - blocked share) on new items
    n: int
    attainable: bool  # False when n is too small for the target: see `note`
    note: str = ""


def lower_threshold(pos_scores: Sequence[float] | np.ndarray, target: float) -> ConformalThreshold:
    """Largest t with P(new positive score >= t) >= target (split conformal, continuous scores)."""
    s = np.sort(np.asarray(pos_scores, dtype=float))
    n = s.size
    alpha = 1.0 - target
    k = math.floor(alpha * (n + 1) + 1e-9)
    if n == 0:
        return ConformalThreshold(_MIN_THRESHOLD, math.nan, 0, False, "no positives to fit on")
    if k < 1:
        need = math.ceil(1.0 / alpha - 1.0)
        return ConformalThreshold(
            _MIN_THRESHOLD, 1.0 - 1.0 / (n + 1), n, False,
            f"{n} positives cannot certify recall {target}: need >= {need}; flagging every "
            "item with a score above zero instead",
        )
    # +inf scores are positives a rule reviews at any bar: if they decide it, any bar will do
    t = min(max(float(s[k - 1]), _MIN_THRESHOLD), 1.0)
    return ConformalThreshold(t, 1.0 - k / (n + 1), n, True)


def coverage_at(pos_scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    """The recall a threshold guarantees on new positives (split conformal): with j of n calib
    positives below it, P(new positive score >= threshold) >= 1 - (j + 1) / (n + 1)."""
    s = np.asarray(pos_scores, dtype=float)
    j = int(np.sum(s < threshold))
    return max(0.0, 1.0 - (j + 1) / (s.size + 1))


def upper_threshold(neg_scores: Sequence[float] | np.ndarray,
                    max_rate: float) -> ConformalThreshold:
    """Smallest t with P(new negative score >= t) <= max_rate (split conformal)."""
    s = np.sort(np.asarray(neg_scores, dtype=float))
    n = s.size
    if n == 0:
        return ConformalThreshold(1.0, math.nan, 0, False, "no negatives to fit on")
    j = math.ceil((1.0 - max_rate) * (n + 1) - 1e-9)
    if j > n:
        need = math.ceil(1.0 / max_rate - 1.0)
        return ConformalThreshold(
            1.0, math.nan, n, False,
            f"{n} negatives cannot certify a blocked share <= {max_rate}: need >= {need}; "
            "blocking only scores of 1.0",
        )
    t = min(max(float(s[j - 1]), _MIN_THRESHOLD), 1.0)
    # ties: a new negative equal to s_(j) is blocked too; nudge up past the tie group
    if t < 1.0 and np.any(s[j:] == t):
        t = min(float(np.nextafter(t, 2.0)), 1.0)
    return ConformalThreshold(t, 1.0 - (n + 1 - j) / (n + 1), n, True)


# -- splitting ---------------------------------------------------------------------------------


def is_calib(pred: Prediction, *, fraction: float = 0.5, salt: str = "childguard") -> bool:
    """Which side of the calib/holdout split an item is on.

    Items whose split says so (calib/train/dev -> calib, holdout/test -> holdout) follow it;
    others are assigned by a hash of their id, so the split is the same on every run.
    """
    if pred.split in ("calib", "train", "dev"):
        return True
    if pred.split in ("holdout", "test"):
        return False
    h = hashlib.sha256(f"{salt}:{pred.dataset}:{pred.id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


# -- calibration -------------------------------------------------------------------------------


#: the rule floors that review (block) a category at any threshold
_REVIEWED_BY_RULE = ("review", "block")
_BLOCKED_BY_RULE = ("block",)


def _caught_score(pred: Prediction, code: str, caught: Sequence[str]) -> float:
    """`pred`'s score for `code`, +inf when a rule floor in `caught` decides it (`_labelled`)."""
    return math.inf if rule_floor(pred, code) in caught else pred.score(code)


def _labelled(preds: Sequence[Prediction], code: str,
              caught: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores for `code`; an item whose rule floor for `code` is in `caught` scores
    +inf. Why: a review floor puts the category at the review threshold *in force*, so the
    item is reviewed whatever bar calibration picks; its recorded score is only the run's
    policy threshold (0.3 before calibration). Counting it as that score let rule-floored
    positives pull a bar down to the old threshold (grooming 0.3, endangerment 0.4 exactly),
    flagging look-alikes for recall the rules already give. The conformal guarantee then holds
    for "reviewed = rule floor or score >= bar", which is what the pipeline does."""
    rows = [(p.labels[code], _caught_score(p, code, caught)) for p in preds if code in p.labels]
    if not rows:
        return np.zeros(0, dtype=int), np.zeros(0)
    y, s = zip(*rows, strict=True)
    return np.asarray(y, dtype=int), np.asarray(s, dtype=float)


def _any_label(p: Prediction) -> int | None:
    if not p.labels:
        return None
    return int(any(v == 1 for v in p.labels.values()))


def calibrate(
    preds: Sequence[Prediction],
    policy: Policy,
    targets: Targets = Targets(),
    *,
    calib_fraction: float = 0.5,
    source_run: str | None = None,
    categories: Sequence[str] | None = None,
) -> Calibration:
    """Fit thresholds on the calib split of `preds` and report coverage on the holdout split.

    `preds` should come from a run without the gate (`--no-gate`), so every item has judged
    scores; items whose category scores are missing count as score 0. `categories` limits the
    fit to those codes (the others keep the policy's thresholds): a category with a handful of
    calib positives cannot certify a target and would otherwise be set to flag everything.
    """
    if categories is not None:
        unknown = sorted(set(categories) - set(policy.spec.codes))
        if unknown:
            raise UserError(f"unknown category code(s) {unknown}; the policy has "
                            f"{list(policy.spec.codes)}")
    calib = [p for p in preds if is_calib(p, fraction=calib_fraction)]
    hold = [p for p in preds if not is_calib(p, fraction=calib_fraction)]
    if not calib:
        raise UserError(f"calibration needs labelled predictions; received {len(preds)} items "
                        "and none fall in the calib split")
    cats: dict[str, CategoryCalibration] = {}
    report: dict[str, Any] = {"calib_items": len(calib), "holdout_items": len(hold),
                              "categories": {}}
    current = policy.thresholds()
    for code in policy.spec.codes:
        y, s = _labelled(calib, code, _REVIEWED_BY_RULE)
        _, s_block = _labelled(calib, code, _BLOCKED_BY_RULE)
        entry: dict[str, Any] = {"calib_positives": int(y.sum()),
                                 "calib_negatives": int((1 - y).sum())}
        if categories is not None and code not in categories:
            entry["note"] = "not selected for calibration: policy thresholds kept"
            report["categories"][code] = entry
            continue
        if y.sum() == 0:
            entry["note"] = "no positives in the calib split: policy thresholds kept"
            report["categories"][code] = entry
            continue
        lo = lower_threshold(s[y == 1], targets.recall)
        hi = upper_threshold(s_block[y == 0], targets.block_fpr)
        block = hi.threshold
        review = lo.threshold
        budget_binds = False
        if targets.review_fpr is not None:
            # the budget is spent on items that violate nothing: a grooming bar that flags a
            # sextortion message is not a false alarm
            benign = np.asarray([_caught_score(p, code, _REVIEWED_BY_RULE) for p in calib
                                 if code in p.labels and _any_label(p) == 0], dtype=float)
            budget = upper_threshold(benign, targets.review_fpr)
            if budget.attainable and budget.threshold > review:
                review, budget_binds = budget.threshold, True
                lo = ConformalThreshold(
                    review, coverage_at(s[y == 1], review), lo.n, False,
                    f"review budget {targets.review_fpr} binds: recall target {targets.recall} "
                    "not kept")
        if review >= block:  # recall already needs a lower bar than blocking: keep review below
            review = max(min(review, block) * 0.999, _MIN_THRESHOLD)
        if review >= block:  # block at the floor: nothing sensible to separate
            block = min(review * 2, 1.0)
        cats[code] = CategoryCalibration(review=round(review, 6), block=round(block, 6))
        yh, sh = _labelled(hold, code, _REVIEWED_BY_RULE)
        _, sh_block = _labelled(hold, code, _BLOCKED_BY_RULE)
        entry.update({
            "review": cats[code].review, "block": cats[code].block,
            "previous": current[code].model_dump(),
            "guaranteed_recall": lo.guaranteed, "recall_attainable": lo.attainable,
            "review_budget_binds": budget_binds,
            "guaranteed_block_fpr": (1.0 - hi.guaranteed) if hi.attainable else math.nan,
            "block_attainable": hi.attainable,
            "calib_recall": _rate(s[y == 1] >= cats[code].review),
            "calib_review_rate": _rate(s >= cats[code].review),
            "holdout_positives": int(yh.sum()), "holdout_negatives": int((1 - yh).sum()),
            "holdout_recall": _rate(sh[yh == 1] >= cats[code].review),
            "holdout_block_fpr": _rate(sh_block[yh == 0] >= cats[code].block),
            "holdout_review_rate": _rate((sh >= cats[code].review)
                                         & (sh_block < cats[code].block)),
            "holdout_flag_rate": _rate(sh >= cats[code].review),
        })
        if lo.attainable and not budget_binds:
            # the bar the recall target alone gives (review may end lower, below block)
            entry["review_spread"] = {"recall_bar": round(lo.threshold, 6),
                                      **bar_spread(s[y == 1], s, targets.recall)}
        notes = [n for n in (lo.note, hi.note) if n]
        if notes:
            entry["note"] = "; ".join(notes)
        report["categories"][code] = entry
    gate: GateCalibration | None = None
    gate_pos = [p.gate_score for p in calib if _any_label(p) == 1 and p.gate_score is not None]
    if gate_pos:
        g = lower_threshold(gate_pos, targets.gate_recall)
        gate = GateCalibration(allow_below=round(g.threshold, 6))
        hold_pos = [p.gate_score for p in hold
                    if _any_label(p) == 1 and p.gate_score is not None]
        hold_all = [p.gate_score for p in hold if p.gate_score is not None]
        report["gate"] = {
            "allow_below": gate.allow_below, "guaranteed_gate_recall": g.guaranteed,
            "attainable": g.attainable, "note": g.note, "calib_positives": len(gate_pos),
            "holdout_gate_recall": _rate(np.asarray(hold_pos) >= gate.allow_below),
            "holdout_judge_rate": _rate(np.asarray(hold_all) >= gate.allow_below),
        }
    else:
        report["gate"] = {"note": "no probe scores on violating calib items: gate unchanged"}
    return Calibration(
        policy_id=policy.id, policy_version=policy.version, created_at=datetime.now(UTC),
        source_run=source_run, targets=targets, categories=cats, gate=gate, report=report,
    )


def bar_spread(pos_scores: np.ndarray, all_scores: np.ndarray, target: float, *,
               draws: int = 500, seed: int = 0) -> dict[str, list[float]]:
    """How far the review bar moves when the calib positives are resampled (bootstrap, 5th and
    95th percentile), and the share of calib items each end would flag.

    Why: a bar at recall 0.9 is the 2nd-3rd lowest of 20-40 positives, so one positive more or
    less moves it a lot (a rerun of the same encoder moved sexual_minors 0.033 -> 0.013 and
    the look-alikes flagged on test 19% -> 24%); the spread says so before it ships."""
    rng = np.random.default_rng(seed)
    pos = np.asarray(pos_scores, dtype=float)
    bars = np.array([lower_threshold(rng.choice(pos, pos.size), target).threshold
                     for _ in range(draws)])
    lo, hi = (float(np.quantile(bars, q)) for q in (0.05, 0.95))
    scores = np.asarray(all_scores, dtype=float)
    return {"bar_p05_p95": [round(lo, 6), round(hi, 6)],
            "calib_review_rate_at": [_rate(scores >= lo), _rate(scores >= hi)]}


def _rate(mask: np.ndarray) -> float:
    mask = np.asarray(mask, dtype=bool)
    return float(mask.mean()) if mask.size else math.nan


