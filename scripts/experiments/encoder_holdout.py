"""Held-out check of frozen encoders + logistic regression, protocol v2: fit on train splits
(OpenAI train half, child_safety_v2 train, v1 train+dev), per-category bars on v2 calib
(95% and 90% recall per category), report once on v2 test, XSTest and the OpenAI test half.

Why: `encoder_cv.py` selected on train rows by cross-validation; this is the report of the
selected recipe on the frozen test splits, with bootstrap intervals, next to the packaged
MiniLM in the same run. Embeddings persist per encoder and item list (no text).

    PYTHONPATH=scripts/experiments .venv/bin/python scripts/experiments/encoder_holdout.py \
        --out runs/enc-holdout --encoder minilm= --encoder gemma=/path/to/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from encoder_cv import embed
from finetune_cv import CODES, lr_scores

from childguard.evaluation.datasets import load_dataset

V2 = "evaluation_sets/child_safety_v2.jsonl"
CATS = ("grooming", "sextortion", "endangerment")


def _ci(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    if not len(values):
        return [float("nan")] * 2
    boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(1000)]
    return [round(float(np.percentile(boots, 2.5)), 3), round(float(np.percentile(boots, 97.5)), 3)]


def main() -> None:
    from sklearn.metrics import average_precision_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--encoder", action="append", required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    train = (list(load_dataset("openai_moderation_all").split("train"))
             + list(load_dataset(V2).split("train"))
             + list(load_dataset("evaluation_sets/child_safety_v1.jsonl").split("train", "dev")))
    calib = list(load_dataset(V2).split("calib"))
    test = list(load_dataset(V2).split("test"))
    xs = list(load_dataset("xstest"))
    oai = list(load_dataset("openai_moderation").split("test"))
    res: dict = {"train": len(train), "calib": len(calib), "test": len(test)}
    for spec in a.encoder:
        name, _, path = spec.partition("=")
        rng = np.random.default_rng(0)
        x = {k: embed(f"{name}-{k}", path, items, a.out) for k, items in
             (("train", train), ("calib", calib), ("test", test), ("xstest", xs), ("oai", oai))}
        sc = {k: lr_scores(x["train"], train, x[k], CODES) for k in x if k != "train"}
        m: dict = {}
        y_oai = np.array([it.labels.get("sexual_minors", 0) for it in oai])
        m["oai_test.sexual_minors.auprc"] = round(float(average_precision_score(
            y_oai, sc["oai"]["sexual_minors"])), 3)
        for target in (0.95, 0.90):
            bars = {}
            for c in CATS:
                pos = np.array([sc["calib"][c][i] for i, it in enumerate(calib)
                                if it.labels.get(c) == 1])
                bars[c] = float(np.quantile(pos, 1 - target))

            def flagged(split: str, items: list, sc: dict = sc, bars: dict = bars) -> np.ndarray:
                return np.array([any(sc[split][c][i] >= bars[c] for c in CATS)
                                 for i in range(len(items))])

            f_test = flagged("test", test)
            viol = np.array([any(v == 1 for v in it.labels.values()) for it in test])
            f_xs = flagged("xstest", xs)
            key = f"at_calib_recall_{int(target * 100)}"
            m[key] = {
                "v2_test.violating_flagged": round(float(f_test[viol].mean()), 3),
                "ci": _ci(f_test[viol].astype(float), rng),
                "v2_test.lookalikes_flagged": round(float(f_test[~viol].mean()), 3),
                "ci_lookalikes": _ci(f_test[~viol].astype(float), rng),
                "xstest_flagged": round(float(f_xs.mean()), 3),
                "ci_xstest": _ci(f_xs.astype(float), rng),
                **{f"v2_test.{c}.recall": round(float(np.mean(
                    [sc["test"][c][i] >= bars[c] for i, it in enumerate(test)
                     if it.labels.get(c) == 1])), 3) for c in CATS},
            }
        res[name] = m
        print(json.dumps({name: m}), flush=True)
    (a.out / "report.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
