"""PR curves and decision confusion matrices as matplotlib figures (Agg: no display needed).

Shared by `eval run` (logged as PNG artifacts) and the compare notebook (two runs side by
side), so both draw the same thing from the same id-only predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from childguard.evaluation.predictions import INVALID, Prediction


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def close(fig: Any) -> None:
    _plt().close(fig)


def pr_points(rows: Sequence[Prediction], code: str) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(precision, recall, AUPRC) for `code` over the rows labelled for it; None if no positives."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    lab = [p for p in rows if code in p.labels and p.decision != INVALID]
    y = np.array([p.labels[code] for p in lab], dtype=int)
    if y.sum() == 0:
        return None
    s = np.array([p.score(code) for p in lab], dtype=float)
    precision, recall, _ = precision_recall_curve(y, s)
    return precision, recall, float(average_precision_score(y, s))


def pr_curves(runs: Mapping[str, Sequence[Prediction]], codes: Sequence[str], *,
              title: str = "PR curves", ax: Any = None) -> Any:
    """One PR curve per (run label, code) with positives; None when nothing has positives."""
    plt = _plt()
    curves = [(label, code, pts) for label, rows in runs.items() for code in codes
              if (pts := pr_points(rows, code)) is not None]
    if not curves:
        return None
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    for label, code, (precision, recall, ap) in curves:
        ax.step(recall, precision, where="post", label=f"{label} {code} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    return fig if fig is not None else ax.figure


def confusion(rows: Sequence[Prediction], *, title: str = "decisions") -> Any:
    """Label (any category violating or not) x decision (allow/review/block) counts."""
    plt = _plt()
    cols = ["allow", "review", "block"]
    mat = np.zeros((2, 3), dtype=int)
    for p in rows:
        if p.decision == INVALID or not p.labels:
            continue
        r = int(any(v == 1 for v in p.labels.values()))
        mat[r, cols.index(p.decision)] += 1
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(3), cols)
    ax.set_yticks(range(2), ["not violating", "violating"])
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > mat.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig
