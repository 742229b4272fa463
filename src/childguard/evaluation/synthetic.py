"""Synthetic labelled sets with known score distributions, for tests, demos and the notebook.

Why: calibration and comparison logic must be checked on data whose truth we control, without
any harmful text. Items are neutral filler ("synthetic item 17"); which ones are "violating" is
only a label, and the scores the judge should give are a map id -> {code: score} that the
deterministic `ReferenceJudge(policy, scores=...)` returns. Positive scores come from a Beta
distribution skewed high, negatives skewed low, overlapping so thresholds matter.
"""

from __future__ import annotations

import numpy as np

from childguard.evaluation.datasets import EvalDataset, EvalItem

DEFAULT_CODE = "sexual_minors"


def synthetic_set(
    n_pos: int = 100,
    n_neg: int = 400,
    *,
    code: str = DEFAULT_CODE,
    seed: int = 0,
    name: str = "synthetic",
    split_fraction: float | None = None,
    pos_beta: tuple[float, float] = (5.0, 2.0),
    neg_beta: tuple[float, float] = (1.5, 8.0),
) -> tuple[EvalDataset, dict[str, dict[str, float]]]:
    """(dataset, judge score map). With `split_fraction`, items alternate-free random into
    'calib' (that share) and 'holdout'; otherwise no split (hash-assigned later)."""
    rng = np.random.default_rng(seed)
    items: list[EvalItem] = []
    scores: dict[str, dict[str, float]] = {}
    labels = np.array([1] * n_pos + [0] * n_neg)
    rng.shuffle(labels)
    for i, y in enumerate(labels):
        item_id = f"{name}-{i:05d}"
        s = rng.beta(*pos_beta) if y else rng.beta(*neg_beta)
        split = None
        if split_fraction is not None:
            split = "calib" if rng.random() < split_fraction else "holdout"
        items.append(EvalItem(id=item_id, text=f"synthetic item {i}", labels={code: int(y)},
                              split=split))
        scores[item_id] = {code: round(float(s), 6)}
    return EvalDataset(name, tuple(items), source=f"synthetic(seed={seed})"), scores
