"""Paired comparison of two finetune_cv.py output directories on the rows both scored out of fold.

Why: choosing between two encoder configurations (e.g. top 4 vs top 8 trainable blocks) must
rest on the same train rows, scored out of fold, with an interval on the difference; test
splits are never read here. Prints JSON: per method (head, tuned_lr) the v2 any-category AUPRC,
the look-alikes' flagged rate at the bar keeping 95% of v2 violating rows, OpenAI S3 AUPRC, and
paired bootstrap 95% intervals of B - A (1,000 resamples of the rows, seed 0).

    .venv/bin/python scripts/experiments/cv_compare.py runs/ft-cv-gemma4 runs/ft-cv-gemma8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

V2_CODES = ("grooming", "sextortion", "endangerment")


def rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for p in sorted(out.glob("fold*.json"))
            for r in json.loads(p.read_text())["rows"]}


def v2_any(rr: list[dict], method: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([int(any(v == 1 for v in r["labels"].values())) for r in rr])
    s = np.array([max(r[method].get(c, 0.0) for c in V2_CODES) for r in rr])
    return y, s


def lookalikes_at_95(y: np.ndarray, s: np.ndarray) -> float:
    bar = np.quantile(s[y == 1], 0.05)
    return float(np.mean(s[y == 0] >= bar))


def oai(rr: list[dict], method: str) -> tuple[np.ndarray, np.ndarray]:
    rr = [r for r in rr if "sexual_minors" in r["labels"]]
    return (np.array([r["labels"]["sexual_minors"] for r in rr]),
            np.array([r[method].get("sexual_minors", 0.0) for r in rr]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    ra, rb = rows(args.a), rows(args.b)
    ids = sorted(set(ra) & set(rb))
    rng = np.random.default_rng(0)
    res: dict = {"a": str(args.a), "b": str(args.b), "rows": len(ids)}
    for method in ("head", "tuned_lr"):
        m: dict = {}
        for name, pick, metrics in (
            ("v2", lambda r: r["set"] == "v2", {
                "any_auprc": lambda y, s: average_precision_score(y, s),
                "lookalikes_flagged_at_recall95": lookalikes_at_95}),
            ("oai", lambda r: r["set"] == "oai", {
                "sexual_minors_auprc": lambda y, s: average_precision_score(y, s)}),
        ):
            a_rows = [ra[i] for i in ids if pick(ra[i])]
            b_rows = [rb[i] for i in ids if pick(rb[i])]
            get = v2_any if name == "v2" else oai
            ya, sa = get(a_rows, method)
            yb, sb = get(b_rows, method)
            assert (ya == yb).all()
            for mname, f in metrics.items():
                va, vb = f(ya, sa), f(yb, sb)
                diffs = []
                for _ in range(1000):
                    idx = rng.integers(0, len(ya), len(ya))
                    if ya[idx].sum() == 0 or ya[idx].sum() == len(idx):
                        continue
                    diffs.append(f(ya[idx], sb[idx]) - f(ya[idx], sa[idx]))
                lo, hi = np.percentile(diffs, [2.5, 97.5])
                m[f"{name}.{mname}"] = {"a": round(float(va), 3), "b": round(float(vb), 3),
                                        "b_minus_a_ci95": [round(float(lo), 3),
                                                           round(float(hi), 3)],
                                        "n": len(ya), "positives": int(ya.sum())}
        res[method] = m
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
