"""What a MiniLM screen in front of EmbeddingGemma would cost and save, from the embeddings
`encoder_holdout.py` cached: frozen MiniLM + LR decides which items skip Gemma (max category
score under a bar set on v2 calib for a given recall), Gemma + LR scores the rest. Bars on calib,
report on test (v2 test, XSTest, OpenAI test half): share of items that skip Gemma, and the
flagged rates of the combination against Gemma alone.

    PYTHONPATH=scripts/experiments .venv/bin/python scripts/experiments/screen_estimate.py \
        --out runs/enc-holdout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from encoder_holdout import CATS, V2
from finetune_cv import CODES, lr_scores

from childguard.evaluation.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    train = (list(load_dataset("openai_moderation_all").split("train"))
             + list(load_dataset(V2).split("train"))
             + list(load_dataset("evaluation_sets/child_safety_v1.jsonl").split("train", "dev")))
    sets = {"calib": list(load_dataset(V2).split("calib")),
            "test": list(load_dataset(V2).split("test")),
            "xstest": list(load_dataset("xstest")),
            "oai": list(load_dataset("openai_moderation").split("test"))}

    def scores(enc: str) -> dict:
        x = {k: np.load(a.out / f"{enc}-{k}.npz")["x"] for k in ("train", *sets)}
        return {k: lr_scores(x["train"], train, x[k], CODES) for k in sets}

    mini, gem = scores("minilm"), scores("gemma")
    res = {}
    viol = {k: np.array([any(v == 1 for v in it.labels.values()) for it in items])
            for k, items in sets.items()}
    for screen_recall in (0.99, 0.995, 1.0):
        smax = {k: np.max([mini[k][c] for c in CODES if c in mini[k]], axis=0) for k in sets}
        bar = float(np.quantile(smax["calib"][viol["calib"]], 1 - screen_recall))
        gbars = {}
        for c in CATS:
            pos = [gem["calib"][c][i] for i, it in enumerate(sets["calib"]) if it.labels.get(c) == 1
                   and smax["calib"][i] >= bar]
            gbars[c] = float(np.quantile(pos, 0.05))
        out = {"screen_bar": round(bar, 4)}
        for k in ("test", "xstest", "oai"):
            passed = smax[k] >= bar
            flag = passed & np.array([any(gem[k][c][i] >= gbars[c] for c in CATS)
                                      for i in range(len(sets[k]))])
            out[k] = {"skip_gemma": round(float(1 - passed.mean()), 3),
                      "violating_flagged": round(float(flag[viol[k]].mean()), 3)
                      if viol[k].any() else None,
                      "benign_flagged": round(float(flag[~viol[k]].mean()), 3)}
        res[f"screen_recall_{screen_recall}"] = out
        print(json.dumps({f"screen_recall_{screen_recall}": out}), flush=True)
    (a.out / "screen_estimate.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
