"""Run-level metrics from predictions: flagged = review/block, errors fail closed, invalid
items are counted but not scored, and flips between two prediction lists."""

from __future__ import annotations

import pytest

from childguard.evaluation.compare import compare_predictions
from childguard.evaluation.predictions import INVALID, Prediction
from childguard.evaluation.runner import compute_metrics


def _p(i: str, y: int, s: float, decision: str, *, status: str = "ok", judged: bool = True,
       ds: str = "d") -> Prediction:
    cd = {} if status != "ok" else {"sexual_minors": decision}
    return Prediction(id=i, dataset=ds, labels={"sexual_minors": y}, scores={"sexual_minors": s}
                      if status == "ok" else {}, category_decisions=cd, decision=decision,
                      status=status, judged=judged, latency_ms=10.0)


def test_compute_metrics_by_hand() -> None:
    preds = [
        _p("a", 1, 0.95, "block"),
        _p("b", 1, 0.5, "review"),
        _p("c", 1, 0.0, "review", status="error"),  # failed -> review: counts as flagged
        _p("d", 0, 0.1, "allow", judged=False),
        _p("e", 0, 0.6, "review"),
        _p("f", 0, 0.0, INVALID, status=INVALID, judged=False),
    ]
    m = compute_metrics(preds, ["sexual_minors", "grooming"])
    assert m["d.items"] == 6 and m["d.invalid"] == 1
    assert m["d.review_rate"] == pytest.approx(3 / 5)
    assert m["d.block_rate"] == pytest.approx(1 / 5)
    assert m["d.judge_call_rate"] == pytest.approx(4 / 5)
    assert m["d.error_rate"] == pytest.approx(1 / 5)
    assert m["d.sexual_minors.recall"] == 1.0
    assert m["d.sexual_minors.precision"] == pytest.approx(3 / 4)
    assert m["d.sexual_minors.fpr"] == pytest.approx(1 / 2)
    assert m["d.sexual_minors.block_recall"] == pytest.approx(1 / 3)
    assert "d.grooming.recall" not in m  # no labels for grooming: nothing reported
    assert m["sexual_minors.recall"] == m["d.sexual_minors.recall"]  # unprefixed = all sets


def test_error_verdict_with_scores_is_flagged_and_ranked_but_never_blocked() -> None:
    """An error verdict keeps the probes' scores and their threshold decisions (allow here):
    it still counts as flagged for every category (it went to review), is ranked by its score
    in AUPRC, and a category decision of block does not make it a block."""
    err = Prediction(id="c", dataset="d", labels={"sexual_minors": 1},
                     scores={"sexual_minors": 0.9}, category_decisions={"sexual_minors": "allow"},
                     decision="review", status="error", judged=False, latency_ms=1.0)
    assert err.category_flagged("sexual_minors") and err.category_flagged("grooming")
    blocked_code = Prediction(**{**err.to_json(), "category_decisions": {"sexual_minors":
                                                                          "block"}})
    assert not blocked_code.category_blocked("sexual_minors")
    preds = [err, _p("a", 0, 0.5, "review"), _p("b", 1, 0.2, "review"), _p("e", 0, 0.1, "allow")]
    m = compute_metrics(preds, ["sexual_minors"])
    assert m["d.sexual_minors.recall"] == 1.0
    assert m["d.sexual_minors.auprc"] == pytest.approx((1 + 2 / 3) / 2)  # ranked first, not last


def test_flips() -> None:
    a = [_p("x", 1, 0.5, "review"), _p("y", 0, 0.1, "allow"), _p("z", 0, 0.1, "allow")]
    b = [_p("x", 1, 0.5, "allow"), _p("y", 0, 0.1, "allow"), _p("w", 0, 0.1, "allow")]
    flips, only_a, only_b = compare_predictions(a, b)
    assert [(f.id, f.a, f.b) for f in flips] == [("x", "review", "allow")]
    assert (only_a, only_b) == (["z"], ["w"])


def test_latency_of_items_that_skip_the_judge_is_reported_apart() -> None:
    from dataclasses import replace

    preds = [replace(_p("a", 1, 0.9, "review"), latency_ms=3000.0),
             replace(_p("b", 0, 0.1, "allow", judged=False), latency_ms=10.0),
             replace(_p("c", 0, 0.1, "allow", judged=False), latency_ms=20.0)]
    m = compute_metrics(preds, ["sexual_minors"])
    assert m["d.latency_p50_ms"] == pytest.approx(20.0)
    assert m["d.latency_p50_unjudged_ms"] == pytest.approx(15.0)
    judged_only = compute_metrics(preds[:1], ["sexual_minors"])
    assert "d.latency_p50_unjudged_ms" not in judged_only


def test_obfuscation_slices_compare_disguised_with_plain_recall() -> None:
    from childguard.evaluation.predictions import Prediction
    from childguard.evaluation.runner import compute_metrics

    def pred(i: int, y: int, flagged: bool, obf: str | None, ds: str = "v2") -> Prediction:
        return Prediction(id=f"{ds}{i}", dataset=ds, labels={"grooming": y},
                          scores={"grooming": 0.9 if flagged else 0.1}, category_decisions={},
                          decision="review" if flagged else "allow", status="ok",
                          judged=False, latency_ms=1.0,
                          extra={"obfuscation": obf} if obf else {})

    rows = [pred(0, 1, True, None), pred(1, 1, True, None), pred(2, 1, False, "leet"),
            pred(3, 1, True, "injection"), pred(4, 0, True, "leet"),
            pred(5, 1, False, None, ds="oai")]  # a set without markers stays out
    m = compute_metrics(rows, ["grooming"])
    assert m["v2.slice.plain.any.recall"] == 1.0 and m["v2.slice.plain.any.n"] == 2
    assert m["v2.slice.disguised.any.recall"] == 0.5 and m["v2.slice.disguised.any.n"] == 2
    assert m["v2.slice.leet.any.recall"] == 0.0 and m["v2.slice.injection.any.recall"] == 1.0
    assert m["slice.plain.any.n"] == 2  # the oai row is not "plain"
    assert not any(k.startswith("oai.slice") for k in m)
