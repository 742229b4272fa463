"""Fit the stacker: per category, logistic regression on the probe's and the judge's logits.

Why: the judge is a second opinion that can disagree. With `combine: max` it can only raise a
score; fitted on a calib split, the stacker learns how much a judge "no" should lower a probe
score and a judge "yes" raise it, per category, from the two models' own scores before any
combination (`Prediction.extra`: "probe" and "judge"). Fitted on calib rows only (split
`calib`/`train`/`dev`, or the hashed calib half of unsplit sets, as thresholds are), from a
run without the gate so that every row has a judge score; thresholds are then fitted on the
stacked scores of the same rows (conformal, `calibration.calibrate`).

Features: logit(probe), logit(judge), on judged rows (an item the judge did not see keeps its
probe score). A category needs `min_positives` judged calib positives and negatives with probe
scores, or it keeps `max`.
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


def _features(p: Prediction, code: str) -> tuple[float, float | None] | None:
    probe = (p.extra.get("probe") or {}).get(code)
    if probe is None:
        return None
    judge = (p.extra.get("judge") or {}) if p.judged else {}
    j = judge.get(code, 0.0) if judge else None
    return float(probe), (None if j is None else float(j))


def fit_stacker(preds: Sequence[Prediction], codes: Sequence[str], *,
                calib_fraction: float = 0.5, c: float = 1.0,
                min_positives: int = MIN_POSITIVES,
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
        clf = LogisticRegression(C=c, max_iter=5000)
        clf.fit(x, y)
        weights[code] = StackWeights(bias=round(float(clf.intercept_[0]), 6),
                                     probe=round(float(clf.coef_[0][0]), 6),
                                     judge=round(float(clf.coef_[0][1]), 6))
        entry.update(weights[code].model_dump())
        report[code] = entry
    return weights, report


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
