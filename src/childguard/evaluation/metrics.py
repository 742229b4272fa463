"""Classification metrics for one category: pure numpy (plus sklearn's AUPRC/AUROC).

Why our own functions: the numbers we report (recall at a fixed false positive rate, expected
calibration error, decision-based precision/recall where `review` counts as flagged) are not all
in sklearn, and they must behave sensibly on tiny or one-class sets (a category with no
positives in XSTest gives an FPR but no recall): undefined values are NaN, never an exception,
and NaN is left out when logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_FPR_TARGETS = (0.01, 0.05)


def _arr(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else math.nan


def confusion_counts(y_true: Sequence[int] | np.ndarray,
                     y_pred: Sequence[int] | np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) for binary labels and binary predictions."""
    y, p = _arr(y_true).astype(bool), _arr(y_pred).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_pred has {p.size}")
    tp = int(np.sum(y & p))
    fp = int(np.sum(~y & p))
    fn = int(np.sum(y & ~p))
    tn = int(np.sum(~y & ~p))
    return tp, fp, fn, tn


def average_precision(y_true: Sequence[int] | np.ndarray,
                      y_score: Sequence[float] | np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as sklearn); NaN without positives."""
    y, s = _arr(y_true), _arr(y_score)
    if y.sum() == 0:
        return math.nan
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


def roc_auc(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    y, s = _arr(y_true), _arr(y_score)
    if y.sum() == 0 or y.sum() == y.size:
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def recall_at_fpr(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                  max_fpr: float) -> float:
    """The highest recall reachable with a score threshold whose FPR is <= `max_fpr`.

    Items with score >= threshold are flagged; thresholds are the observed scores (ties are
    flagged together, so a threshold cannot split a tie). NaN without positives or negatives.
    """
    y, s = _arr(y_true).astype(bool), _arr(y_score)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    best = 0.0
    for t in np.unique(s):
        flagged = s >= t
        fpr = np.sum(flagged & ~y) / n_neg
        if fpr <= max_fpr + 1e-12:
            best = max(best, float(np.sum(flagged & y) / n_pos))
    return best


def expected_calibration_error(y_true: Sequence[int] | np.ndarray,
                               y_score: Sequence[float] | np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins on [0, 1]: sum over bins of |bin|/n * |mean(y) - mean(score)|.

    A score of exactly 1.0 falls in the last bin. NaN for an empty input.
    """
    y, s = _arr(y_true), _arr(y_score)
    if y.size == 0:
        return math.nan
    if n_bins <= 0:
        raise ValueError(f"n_bins must be positive; received {n_bins}")
    idx = np.minimum((s * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.sum() / y.size * abs(float(y[mask].mean()) - float(s[mask].mean()))
    return float(ece)


@dataclass(frozen=True)
class CategoryMetrics:
    """Metrics of one category on one dataset. NaN where undefined (no positives, ...)."""

    n: int
    positives: int
    precision: float
    recall: float
    f1: float
    fpr: float
    flag_rate: float
    block_recall: float
    block_fpr: float
    auprc: float
    auroc: float
    ece: float
    recall_at_fpr: Mapping[float, float]

    def as_flat(self) -> dict[str, float]:
        """Flat name -> value (recall_at_fpr_1pct, ...), NaN kept (filter before logging)."""
        d = asdict(self)
        raf = d.pop("recall_at_fpr")
        out = {k: float(v) for k, v in d.items()}
        for fpr, v in raf.items():
            out[f"recall_at_fpr_{_pct(fpr)}"] = float(v)
        return out


def _pct(x: float) -> str:
    p = x * 100
    return f"{p:g}pct".replace(".", "p")


def category_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    y_flag: Sequence[int] | np.ndarray,
    y_block: Sequence[int] | np.ndarray | None = None,
    *,
    fpr_targets: Sequence[float] = DEFAULT_FPR_TARGETS,
) -> CategoryMetrics:
    """Metrics for one category.

    `y_flag`: the pipeline's decision flagged the item (review or block): precision, recall,
    F1 and FPR are about flagging, since a flagged item reaches a human or is removed.
    `y_block`: the item was blocked (defaults to `y_flag`). `y_score`: the category score,
    for AUPRC, AUROC, recall at fixed FPR and calibration error.
    """
    y = _arr(y_true).astype(int)
    s = _arr(y_score)
    f = _arr(y_flag).astype(int)
    b = f if y_block is None else _arr(y_block).astype(int)
    if not (y.size == s.size == f.size == b.size):
        raise ValueError(f"lengths differ: y_true {y.size}, y_score {s.size}, y_flag {f.size}, "
                         f"y_block {b.size}")
    tp, fp, fn, tn = confusion_counts(y, f)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    if tp + fn == 0:
        f1 = math.nan
    elif tp == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    btp, bfp, bfn, btn = confusion_counts(y, b)
    return CategoryMetrics(
        n=int(y.size),
        positives=int(y.sum()),
        precision=precision,
        recall=recall,
        f1=f1,
        fpr=_safe_div(fp, fp + tn),
        flag_rate=_safe_div(tp + fp, y.size),
        block_recall=_safe_div(btp, btp + bfn),
        block_fpr=_safe_div(bfp, bfp + btn),
        auprc=average_precision(y, s),
        auroc=roc_auc(y, s),
        ece=expected_calibration_error(y, s),
        recall_at_fpr={t: recall_at_fpr(y, s, t) for t in fpr_targets},
    )


def _fast_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision as sklearn computes it (step-wise over distinct scores), in numpy:
    the bootstrap below calls it a thousand times per category."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    if tps[-1] == 0:
        return math.nan
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def bootstrap_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    y_flag: Sequence[int] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap intervals (items resampled with replacement) for AUPRC, flag
    recall, flag FPR and flag rate: `<metric>_lo` / `<metric>_hi`.

    Why: the sets are small (19 positives in the OpenAI test half, 4-12 per category in ours),
    so a point estimate moves in big steps; a difference between two runs means something only
    when it is large against these intervals. Undefined metrics (no positives) are left out;
    resamples without positives (or negatives) are skipped for the metrics that need them.
    The seed is fixed so a run's intervals are reproducible."""
    y = _arr(y_true).astype(int)
    s = _arr(y_score)
    f = _arr(y_flag).astype(int)
    if not y.size:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, y.size, size=(n_boot, y.size))
    stats: dict[str, list[float]] = {"auprc": [], "recall": [], "fpr": [], "flag_rate": []}
    for idx in draws:
        yb, sb, fb = y[idx], s[idx], f[idx]
        pos = int(yb.sum())
        stats["flag_rate"].append(float(fb.mean()))
        if pos:
            stats["auprc"].append(_fast_ap(yb, sb))
            stats["recall"].append(float(fb[yb == 1].mean()))
        if pos < yb.size:
            stats["fpr"].append(float(fb[yb == 0].mean()))
    out: dict[str, float] = {}
    tail = (1 - level) / 2 * 100
    for name, values in stats.items():
        if name in ("auprc", "recall") and not y.sum():
            continue
        if name == "fpr" and y.sum() == y.size:
            continue
        v = np.asarray([x for x in values if math.isfinite(x)])
        if v.size:
            out[f"{name}_lo"] = float(np.percentile(v, tail))
            out[f"{name}_hi"] = float(np.percentile(v, 100 - tail))
    return out


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    v = _arr(values)
    return float(np.percentile(v, q)) if v.size else math.nan


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop NaN/inf values (MLflow accepts NaN but it hides real numbers in comparisons)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
