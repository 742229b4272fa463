"""Fit the stacker: per category, logistic regression on the probe's and the judge's logits.

Why: the judge is a second opinion that can disagree. With `combine: max` it can only raise a
score; fitted on a calib split, the stacker learns how much a judge "no" should lower a probe
score and a judge "yes" raise it, per category, from the two models' own scores before any
combination (`Prediction.extra`: "probe" and "judge"). Fitted on calib rows only (split
`calib`/`train`/`dev`, or the hashed calib half of unsplit sets, as thresholds are), from a
run without the gate so that every row has a judge score; thresholds are then fitted on the
stacked scores of the same rows (conformal, `calibration.calibrate`).

Features: logit(probe), logit(judge), on judged rows (an item the judge did not see keeps its
probe score). The judge's weight is kept only when it raises the cross-validated AUPRC on
the calib rows over the probe alone (by MIN_GAIN); otherwise it is 0 and the judge's answer is
shown to reviewers but does not move the score. A category needs `min_positives` judged calib
positives and negatives with probe scores, or it keeps `max`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from childguard.evaluation.calibration import is_calib
from childguard.evaluation.predictions import Prediction
from childguard.policy import StackWeights, _logit

MIN_POSITIVES = 8
#: cross-validated AUPRC the judge must add over the probe alone to keep a weight (a noise
#: judge gains a few thousandths on a calib split by chance)
MIN_GAIN = 0.01


def _features(p: Prediction, code: str) -> tuple[float, float | None] | None:
    probe = (p.extra.get("probe") or {}).get(code)
    if probe is None:
        return None
    judge = (p.extra.get("judge") or {}) if p.judged else {}
    j = judge.get(code, 0.0) if judge else None
    return float(probe), (None if j is None else float(j))


def fit_stacker(preds: Sequence[Prediction], codes: Sequence[str], *,
                calib_fraction: float = 0.5, c: float = 1.0,
                min_positives: int = MIN_POSITIVES, min_gain: float = MIN_GAIN,
                ) -> tuple[dict[str, StackWeights], dict[str, Any]]:
    """Weights per category with enough judged calib positives and negatives, and a report
    per category (rows, positives, the weights or why none were fitted)."""
    from sklearn.linear_model import LogisticRegression

    weights: dict[str, StackWeights] = {}
    report: dict[str, Any] = {}
    calib = [p for p in preds if is_calib(p, fraction=calib_fraction)]
    for code in codes:
        rows = [(p.labels[code], f) for p in calib if code in p.labels
                and (f := _features(p, code)) is not None and f[1] is not None]
        y = np.array([r[0] for r in rows], dtype=int)
        entry: dict[str, Any] = {"judged_rows": len(rows), "positives": int(y.sum())}
        if y.sum() < min_positives or (len(y) - y.sum()) < min_positives:
            entry["note"] = (f"fewer than {min_positives} judged calib positives or negatives "
                             "with probe scores: combine max kept")
            report[code] = entry
            continue
        x = np.array([[_logit(pr), _logit(j if j is not None else 0.0)] for _, (pr, j) in rows])
        # does the judge earn its place? cross-validated AUPRC on these calib rows, with and
        # without the judge's logit; without a gain the judge gets weight 0 (the score is then
        # a monotone map of the probe's: same ranking, thresholds fitted on it)
        with_judge, probe_only = _cv_auprc(x, y, c), _cv_auprc(x[:, :1], y, c)
        entry.update({"cv_auprc_stacked": round(with_judge, 4),
                      "cv_auprc_probe_only": round(probe_only, 4)})
        use_judge = with_judge >= probe_only + min_gain
        clf = LogisticRegression(C=c, max_iter=5000)
        clf.fit(x if use_judge else x[:, :1], y)
        weights[code] = StackWeights(bias=round(float(clf.intercept_[0]), 6),
                                     probe=round(float(clf.coef_[0][0]), 6),
                                     judge=round(float(clf.coef_[0][1]), 6) if use_judge else 0.0)
        entry.update(weights[code].model_dump())
        if not use_judge:
            entry["note"] = ("the judge did not raise cross-validated AUPRC on the calib rows: "
                             "judge weight 0")
        report[code] = entry
    return weights, report


def _cv_auprc(x: np.ndarray, y: np.ndarray, c: float, *, folds: int = 5,
              repeats: int = 3) -> float:
    """Out-of-fold AUPRC of a logistic regression on `x` (stratified folds, averaged over
    `repeats` shuffles with fixed seeds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(folds, int(y.sum()), int(len(y) - y.sum())))
    scores = []
    for seed in range(repeats):
        oof = np.zeros(len(y))
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
            oof[te] = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr]) \
                .predict_proba(x[te])[:, 1]
        scores.append(float(average_precision_score(y, oof)))
    return float(np.mean(scores))


def stacked(preds: Sequence[Prediction], weights: dict[str, StackWeights]) -> list[Prediction]:
    """The predictions with each weighted category's score replaced by the stacked score
    (what the pipeline's `stacked` combiner gives; rule floors are not re-applied here)."""
    out = []
    for p in preds:
        scores = dict(p.scores)
        for code, w in weights.items():
            f = _features(p, code)
            if f is not None:
                scores[code] = w.score(*f)
        out.append(dataclasses.replace(p, scores=scores))
    return out
