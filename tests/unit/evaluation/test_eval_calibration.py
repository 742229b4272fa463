"""Split-conformal calibration: the stated targets hold on a held-back synthetic split."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from childguard.errors import UserError
from childguard.evaluation.calibration import (
    Targets,
    apply_calibration,
    calibrate,
    load_calibration,
    lower_threshold,
    upper_threshold,
    write_calibration,
)
from childguard.evaluation.predictions import Prediction
from childguard.evaluation.synthetic import synthetic_set
from childguard.policy import load_policy

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies" / "child_safety"


def _preds(n_pos: int, n_neg: int, seed: int) -> list[Prediction]:
    ds, scores = synthetic_set(n_pos, n_neg, seed=seed, split_fraction=0.5)
    rng = np.random.default_rng(seed + 100)
    out = []
    for it in ds:
        s = scores[it.id]["sexual_minors"]
        # a probe score correlated with the judge score, for the gate
        g = float(np.clip(s + rng.normal(0, 0.05), 0, 1))
        out.append(Prediction(id=it.id, dataset=ds.name, labels=dict(it.labels),
                              scores={"sexual_minors": s}, category_decisions={},
                              decision="allow", status="ok", judged=True, latency_ms=1.0,
                              split=it.split, gate_score=g))
    return out


def test_lower_threshold_order_statistic() -> None:
    scores = np.arange(1, 100) / 100.0  # 99 positives 0.01..0.99
    t = lower_threshold(scores, 0.95)  # alpha (n+1) = 5 -> 5th smallest
    assert t.threshold == pytest.approx(0.05)
    assert t.guaranteed == pytest.approx(1 - 5 / 100)
    assert t.attainable


def test_lower_threshold_too_few_positives() -> None:
    t = lower_threshold([0.4, 0.8, 0.9], 0.98)
    assert not t.attainable and t.threshold < 0.01
    assert "need >= 49" in t.note


def test_upper_threshold_order_statistic() -> None:
    scores = np.arange(1, 100) / 100.0  # 99 negatives
    t = upper_threshold(scores, 0.05)  # j = ceil(0.95*100) = 95 -> 0.95
    assert t.threshold == pytest.approx(0.95)
    assert not upper_threshold([0.1, 0.2], 0.01).attainable


def test_targets_hold_on_heldback_split() -> None:
    policy = load_policy(POLICY_DIR)
    targets = Targets(recall=0.95, block_fpr=0.02, gate_recall=0.97)
    # average over several independent draws: the guarantee is in expectation
    recalls, fprs, gate = [], [], []
    for seed in range(5):
        cal = calibrate(_preds(300, 900, seed), policy, targets)
        e = cal.report["categories"]["sexual_minors"]
        assert e["recall_attainable"] and e["block_attainable"]
        assert cal.categories["sexual_minors"].review < cal.categories["sexual_minors"].block
        recalls.append(e["holdout_recall"])
        fprs.append(e["holdout_block_fpr"])
        gate.append(cal.report["gate"]["holdout_gate_recall"])
    assert np.mean(recalls) >= targets.recall - 0.01
    assert np.mean(fprs) <= targets.block_fpr + 0.01
    assert np.mean(gate) >= targets.gate_recall - 0.01
    # minimising review: the threshold is not trivially low (it flags far fewer than all)
    assert e["holdout_flag_rate"] < 0.8


def test_category_without_positives_keeps_policy_thresholds() -> None:
    policy = load_policy(POLICY_DIR)
    cal = calibrate(_preds(120, 300, 1), policy, Targets(recall=0.9))
    assert set(cal.categories) == {"sexual_minors"}
    assert "no positives" in cal.report["categories"]["grooming"]["note"]


def test_calibration_can_be_limited_to_named_categories() -> None:
    policy = load_policy(POLICY_DIR)
    preds = [
        Prediction(id=p.id, dataset=p.dataset, labels={**p.labels, "grooming": p.labels[
            "sexual_minors"]}, scores={**p.scores, "grooming": p.scores["sexual_minors"]},
            category_decisions={}, decision="allow", status="ok", judged=True, latency_ms=1.0,
            split=p.split, gate_score=p.gate_score)
        for p in _preds(120, 300, 2)
    ]
    both = calibrate(preds, policy, Targets(recall=0.9))
    assert set(both.categories) == {"sexual_minors", "grooming"}
    only = calibrate(preds, policy, Targets(recall=0.9), categories=["sexual_minors"])
    assert set(only.categories) == {"sexual_minors"}
    assert "not selected" in only.report["categories"]["grooming"]["note"]
    with pytest.raises(UserError, match="unknown category"):
        calibrate(preds, policy, Targets(recall=0.9), categories=["no_such_code"])


def test_file_roundtrip_and_apply(tmp_path: Path) -> None:
    pdir = tmp_path / "child_safety"
    shutil.copytree(POLICY_DIR, pdir, ignore=shutil.ignore_patterns("calibration.yaml"))
    policy = load_policy(pdir)
    assert load_calibration(pdir) is None
    assert apply_calibration(policy, None) is policy
    cal = calibrate(_preds(200, 600, 2), policy, Targets(recall=0.95))
    write_calibration(cal, pdir)
    loaded = load_calibration(pdir)
    assert loaded is not None and loaded.categories == cal.categories
    applied = apply_calibration(policy, loaded)
    t = applied.thresholds()["sexual_minors"]
    assert (t.review, t.block) == (cal.categories["sexual_minors"].review,
                                   cal.categories["sexual_minors"].block)
    assert applied.thresholds()["grooming"] == policy.thresholds()["grooming"]
    assert applied.version.startswith(policy.version + "+cal")
    assert cal.gate is not None and applied.spec.gate.allow_below == cal.gate.allow_below
    # a wording change makes the calibration stale, and the version says so
    (pdir / "prompt.md").write_text((pdir / "prompt.md").read_text() + "\n", encoding="utf-8")
    assert "+stalecal" in apply_calibration(load_policy(pdir), loaded).version


def test_nan_free_report_yaml(tmp_path: Path) -> None:
    pdir = tmp_path / "child_safety"
    shutil.copytree(POLICY_DIR, pdir, ignore=shutil.ignore_patterns("calibration.yaml"))
    policy = load_policy(pdir)
    cal = calibrate(_preds(5, 40, 3), policy, Targets(recall=0.98))  # unattainable: NaN parts
    text = write_calibration(cal, pdir).read_text()
    assert "nan" not in text.lower()
    assert not math.isnan(load_calibration(pdir).categories["sexual_minors"].review)  # type: ignore[union-attr]


def _separable(scores_pos: list[float], scores_neg: list[float]) -> list[Prediction]:
    """Calib predictions for sexual_minors with the given scores (split 'calib')."""
    return [Prediction(id=f"{lab}{i}", dataset="synthetic", labels={"sexual_minors": lab},
                       scores={"sexual_minors": sc}, category_decisions={}, decision="allow",
                       status="ok", judged=False, latency_ms=1.0, split="calib")
            for lab, scores in ((1, scores_pos), (0, scores_neg))
            for i, sc in enumerate(scores)]


def test_a_review_budget_caps_the_flagged_share_and_says_so() -> None:
    policy = load_policy(POLICY_DIR)
    # 40 positives, six of them scored like the negatives: recall 0.9 needs the 4th lowest
    # (0.02) as the bar, which flags 30% of the 100 negatives (0.02 .. 0.05)
    pos = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, *np.linspace(0.6, 0.99, 34).tolist()]
    neg = [0.001] * 70 + np.linspace(0.02, 0.05, 30).tolist()
    preds = _separable(pos, neg)
    free = calibrate(preds, policy, Targets(recall=0.9), categories=["sexual_minors"])
    e = free.report["categories"]["sexual_minors"]
    assert free.categories["sexual_minors"].review == pytest.approx(0.02)
    assert e["review_budget_binds"] is False and e["calib_review_rate"] > 0.3
    capped = calibrate(preds, policy, Targets(recall=0.9, review_fpr=0.05),
                       categories=["sexual_minors"])
    e = capped.report["categories"]["sexual_minors"]
    assert e["review_budget_binds"] is True and not e["recall_attainable"]
    assert "review budget" in e["note"]
    review = capped.categories["sexual_minors"].review
    assert sum(s >= review for s in neg) <= 5  # at most 5% of the negatives
    assert e["calib_recall"] == pytest.approx(34 / 40)
    assert e["guaranteed_recall"] == pytest.approx(1 - 7 / 41)
    # messages violating another category do not spend the budget
    other = [Prediction(id=f"g{i}", dataset="synthetic",
                        labels={"sexual_minors": 0, "grooming": 1},
                        scores={"sexual_minors": 0.045}, category_decisions={},
                        decision="allow", status="ok", judged=False, latency_ms=1.0,
                        split="calib") for i in range(30)]
    with_other = calibrate(preds + other, policy, Targets(recall=0.9, review_fpr=0.05),
                           categories=["sexual_minors"])
    assert with_other.categories["sexual_minors"].review == review
    # a budget the recall bar already keeps changes nothing
    loose = calibrate(preds, policy, Targets(recall=0.9, review_fpr=0.5),
                      categories=["sexual_minors"])
    assert loose.categories == free.categories
    assert loose.report["categories"]["sexual_minors"]["review_budget_binds"] is False


def test_the_review_bar_spread_shrinks_with_more_positives() -> None:
    from childguard.evaluation.calibration import bar_spread

    rng = np.random.default_rng(3)
    few, many = rng.beta(5, 2, 25), rng.beta(5, 2, 400)
    everything = np.concatenate([many, rng.beta(2, 5, 1000)])
    narrow = bar_spread(many, everything, 0.9)["bar_p05_p95"]
    wide = bar_spread(few, everything, 0.9)["bar_p05_p95"]
    assert narrow[0] <= lower_threshold(many, 0.9).threshold <= narrow[1]
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])
    rates = bar_spread(few, everything, 0.9)["calib_review_rate_at"]
    assert rates[0] >= rates[1]  # the lower bar flags more
    policy = load_policy(POLICY_DIR)
    entry = calibrate(_preds(60, 200, 1), policy, Targets(recall=0.9)).report[
        "categories"]["sexual_minors"]
    lo, hi = entry["review_spread"]["bar_p05_p95"]
    assert lo <= entry["review_spread"]["recall_bar"] <= hi


def _floored_preds(*, with_rules: bool) -> list[Prediction]:
    """100 positives (20 held up only by a review rule: recorded at the run's old review
    threshold 0.3), 300 negatives; all in the calib split."""
    rng = np.random.default_rng(7)
    rows: list[tuple[int, float, str | None]] = (
        [(1, 0.3, "review")] * 20
        + [(1, float(s), None) for s in rng.uniform(0.5, 0.99, 80)]
        + [(0, float(s), None) for s in rng.uniform(0.0, 0.6, 300)])
    out = []
    for i, (y, s, floor) in enumerate(rows):
        extra = {"probe": {"sexual_minors": s}}
        if floor and with_rules:
            extra["rules"] = {"sexual_minors": floor}
        out.append(Prediction(id=f"f{i}", dataset="floors", labels={"sexual_minors": y},
                              scores={"sexual_minors": s}, category_decisions={},
                              decision="allow", status="ok", judged=False, latency_ms=1.0,
                              split="calib", extra=extra))
    return out


def test_rule_floored_positives_do_not_pull_the_review_bar_down() -> None:
    """A review floor reviews its item at whatever bar is calibrated, so calibration counts
    it as caught: the bar rises above the old policy threshold the floor was recorded at, and
    "rule floor or score >= bar" still keeps the recall target on calib. A run that recorded
    no rule floors (older runs) calibrates as before."""
    policy = load_policy(POLICY_DIR)
    targets = Targets(recall=0.95, block_fpr=0.01)
    old = calibrate(_floored_preds(with_rules=False), policy, targets, calib_fraction=1.0,
                    categories=["sexual_minors"])
    new = calibrate(_floored_preds(with_rules=True), policy, targets, calib_fraction=1.0,
                    categories=["sexual_minors"])
    assert old.categories["sexual_minors"].review == pytest.approx(0.3)
    bar = new.categories["sexual_minors"].review
    assert bar > 0.5
    preds = _floored_preds(with_rules=True)
    caught = [bool(p.extra.get("rules")) or p.score("sexual_minors") >= bar
              for p in preds if p.labels["sexual_minors"] == 1]
    assert np.mean(caught) >= 0.95
    entry = new.report["categories"]["sexual_minors"]
    assert entry["calib_recall"] == pytest.approx(np.mean(caught))
    # fewer negatives flagged at the higher bar
    before = old.report["categories"]["sexual_minors"]
    assert entry["calib_review_rate"] < before["calib_review_rate"]


def test_predictions_record_the_strongest_rule_floor_per_category() -> None:
    from childguard.evaluation.predictions import from_verdict, rule_floor
    from childguard.schema import Decision, Signal, Verdict

    def rule(name: str, category: str, floor: str) -> Signal:
        return Signal(name=f"rule.{name}", category=category, model="policy-rules",
                      detail={"floor": floor})

    v = Verdict(item_id="x", decision=Decision.REVIEW, signals=(
        rule("a", "grooming", "review"), rule("b", "grooming", "block"),
        rule("c", "sextortion", "judge"), rule("d", "endangerment", "review"),
        Signal(name="probe.text", category="grooming", score=0.2, model="p"),
    ))
    p = from_verdict(v, dataset="d", labels={}, split="calib", latency_ms=1.0)
    assert [rule_floor(p, c) for c in ("grooming", "sextortion", "endangerment", "sexual_minors")] \
        == ["block", None, "review", None]
    assert p.extra["probe"] == {"grooming": 0.2}
