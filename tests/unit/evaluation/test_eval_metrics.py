"""Metrics against hand-computed small cases and against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from childguard.evaluation.metrics import (
    average_precision,
    category_metrics,
    confusion_counts,
    expected_calibration_error,
    finite,
    recall_at_fpr,
)


def test_confusion_counts_by_hand() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 1, 0, 1, 0]
    assert confusion_counts(y, p) == (2, 1, 1, 2)


def test_category_metrics_by_hand() -> None:
    # 3 positives, 3 negatives; flagged: two positives and one negative; blocked: one positive
    y = [1, 1, 1, 0, 0, 0]
    s = [0.9, 0.6, 0.2, 0.7, 0.1, 0.05]
    flag = [1, 1, 0, 1, 0, 0]
    block = [1, 0, 0, 0, 0, 0]
    m = category_metrics(y, s, flag, block)
    assert m.n == 6 and m.positives == 3
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.fpr == pytest.approx(1 / 3)
    assert m.flag_rate == pytest.approx(3 / 6)
    assert m.block_recall == pytest.approx(1 / 3)
    assert m.block_fpr == 0.0
    # ranking 0.9(+) 0.7(-) 0.6(+) 0.2(+): AP = (1/1 + 2/3 + 3/4) / 3
    assert m.auprc == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # FPR 0 allows only threshold 0.9 -> recall 1/3; FPR <= 1/3 allows 0.2 (one negative,
    # 0.7, above it) -> recall 1
    assert recall_at_fpr(y, s, 0.0) == pytest.approx(1 / 3)
    assert recall_at_fpr(y, s, 0.34) == pytest.approx(1.0)
    assert recall_at_fpr([1, 1, 0, 0], [0.9, 0.3, 0.5, 0.1], 0.0) == pytest.approx(0.5)
    assert recall_at_fpr(y, s, 1.0) == pytest.approx(1.0)


def test_matches_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    flag = (s >= 0.5).astype(int)
    m = category_metrics(y, s, flag)
    assert m.precision == pytest.approx(precision_score(y, flag))
    assert m.recall == pytest.approx(recall_score(y, flag))
    assert m.f1 == pytest.approx(f1_score(y, flag))
    assert m.auprc == pytest.approx(average_precision_score(y, s))


def test_ece_by_hand() -> None:
    # bin [0.1,0.2): scores 0.1,0.1 labels 0,1 -> |0.5-0.1|=0.4, weight 2/4
    # bin [0.9,1.0]: scores 0.9,1.0 labels 1,1 -> |1-0.95|=0.05, weight 2/4
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 1.0]) == pytest.approx(
        0.5 * 0.4 + 0.5 * 0.05)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_undefined_values_are_nan_and_dropped() -> None:
    m = category_metrics([0, 0, 0], [0.1, 0.5, 0.9], [0, 1, 1])
    assert math.isnan(m.recall) and math.isnan(m.auprc) and math.isnan(m.f1)
    assert m.fpr == pytest.approx(2 / 3)
    flat = finite(m.as_flat())
    assert "recall" not in flat and flat["fpr"] == pytest.approx(2 / 3)
    assert "recall_at_fpr_1pct" not in flat
    assert math.isnan(average_precision([0, 0], [0.2, 0.3]))


def test_f1_zero_when_positives_missed() -> None:
    m = category_metrics([1, 0], [0.1, 0.2], [0, 0])
    assert m.f1 == 0.0 and m.recall == 0.0 and math.isnan(m.precision)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        category_metrics([1, 0], [0.1], [0, 0])


def test_fast_average_precision_equals_sklearn_with_ties() -> None:
    from sklearn.metrics import average_precision_score

    from childguard.evaluation.metrics import _fast_ap

    rng = np.random.default_rng(3)
    for _ in range(100):
        y = rng.integers(0, 2, 40)
        if not y.any():
            continue
        s = np.round(rng.random(40), 1)  # many ties
        assert _fast_ap(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible() -> None:
    from childguard.evaluation.metrics import bootstrap_intervals

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    f = (s > 0.5).astype(int)
    ci = bootstrap_intervals(y, s, f)
    cm = category_metrics(y, s, f)
    for name, point in (("auprc", cm.auprc), ("recall", cm.recall), ("fpr", cm.fpr),
                        ("flag_rate", cm.flag_rate)):
        assert ci[f"{name}_lo"] <= point <= ci[f"{name}_hi"], name
        assert ci[f"{name}_hi"] - ci[f"{name}_lo"] > 0.01  # 300 items: not a point
    assert bootstrap_intervals(y, s, f) == ci
    # fewer items, wider interval
    small = bootstrap_intervals(y[:30], s[:30], f[:30])
    assert small["recall_hi"] - small["recall_lo"] > ci["recall_hi"] - ci["recall_lo"]


def test_bootstrap_intervals_leave_out_what_is_undefined() -> None:
    from childguard.evaluation.metrics import bootstrap_intervals

    negatives = bootstrap_intervals([0] * 50, [0.1] * 50, [0] * 49 + [1])
    assert set(negatives) == {"fpr_lo", "fpr_hi", "flag_rate_lo", "flag_rate_hi"}
    assert negatives["fpr_lo"] == 0.0 and negatives["fpr_hi"] > 0.0
    positives = bootstrap_intervals([1] * 20, [0.9] * 20, [1] * 20)
    assert "fpr_lo" not in positives and positives["recall_lo"] == 1.0
    assert bootstrap_intervals([], [], []) == {}
