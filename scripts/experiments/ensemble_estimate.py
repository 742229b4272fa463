"""Ways to combine the packaged MiniLM and EmbeddingGemma, protocol v2, from the embeddings
`encoder_holdout.py` cached: each combination is fit on train (OpenAI train half, v2 train,
v1 train+dev), its per-category bars set on v2 calib for 95% recall, and reported once on v2
test, XSTest and the OpenAI test half, with bootstrap intervals.

Why: Gemma alone flags 19% of the v2 test look-alikes at the 95% bar, MiniLM 34%; where the two
disagree on a look-alike, requiring both (or averaging them) may flag fewer benign messages at
the same recall. Combinations: each alone; LR on the concatenated embeddings; the mean of the
two probabilities; their minimum (flag only when both agree); and the MiniLM screen in front of
Gemma (Gemma skipped under a MiniLM bar at 99.5% calib recall; this script replaced the
screen-only estimate that came before it).

    PYTHONPATH=scripts/experiments .venv/bin/python scripts/experiments/ensemble_estimate.py \
        --out runs/enc-holdout [--second gemma8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from encoder_holdout import CATS, V2, _ci
from finetune_cv import CODES, lr_scores

from childguard.evaluation.datasets import load_dataset


def main() -> None:
    from sklearn.metrics import average_precision_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--second", default="gemma", help="cached encoder name to pair with minilm")
    ap.add_argument("--recall", type=float, default=0.95)
    a = ap.parse_args()
    train = (list(load_dataset("openai_moderation_all").split("train"))
             + list(load_dataset(V2).split("train"))
             + list(load_dataset("evaluation_sets/child_safety_v1.jsonl").split("train", "dev")))
    sets = {"calib": list(load_dataset(V2).split("calib")),
            "test": list(load_dataset(V2).split("test")),
            "xstest": list(load_dataset("xstest")),
            "oai": list(load_dataset("openai_moderation").split("test"))}
    keys = ("train", *sets)
    x1 = {k: np.load(a.out / f"minilm-{k}.npz")["x"] for k in keys}
    x2 = {k: np.load(a.out / f"{a.second}-{k}.npz")["x"] for k in keys}
    xc = {k: np.hstack([x1[k], x2[k]]) for k in keys}
    s1 = {k: lr_scores(x1["train"], train, x1[k], CODES) for k in sets}
    s2 = {k: lr_scores(x2["train"], train, x2[k], CODES) for k in sets}
    sc = {k: lr_scores(xc["train"], train, xc[k], CODES) for k in sets}
    combos = {
        "minilm": s1, a.second: s2, "concat": sc,
        "mean": {k: {c: (s1[k][c] + s2[k][c]) / 2 for c in s2[k]} for k in sets},
        "min": {k: {c: np.minimum(s1[k][c], s2[k][c]) for c in s2[k]} for k in sets},
    }
    viol = {k: np.array([any(v == 1 for v in it.labels.values()) for it in items])
            for k, items in sets.items()}
    y_oai = np.array([it.labels.get("sexual_minors", 0) for it in sets["oai"]])
    rng = np.random.default_rng(0)
    res: dict = {"recall_target": a.recall, "second": a.second}

    def report(name: str, flag: dict[str, np.ndarray], auprc: float | None) -> None:
        f = flag["test"]
        res[name] = {
            "v2_test.violating_flagged": round(float(f[viol["test"]].mean()), 3),
            "ci": _ci(f[viol["test"]].astype(float), rng),
            "v2_test.lookalikes_flagged": round(float(f[~viol["test"]].mean()), 3),
            "ci_lookalikes": _ci(f[~viol["test"]].astype(float), rng),
            "xstest_flagged": round(float(flag["xstest"].mean()), 3),
            "ci_xstest": _ci(flag["xstest"].astype(float), rng),
            "oai_test.sexual_minors.auprc": auprc,
            **{f"v2_test.{c}.recall": round(float(np.mean(
                [flag["test"][i] for i, it in enumerate(sets["test"]) if it.labels.get(c) == 1]
            )), 3) for c in CATS},
        }
        print(json.dumps({name: res[name]}), flush=True)

    for name, s in combos.items():
        bars = {c: float(np.quantile([s["calib"][c][i] for i, it in enumerate(sets["calib"])
                                      if it.labels.get(c) == 1], 1 - a.recall)) for c in CATS}
        flag = {k: np.array([any(s[k][c][i] >= bars[c] for c in CATS)
                             for i in range(len(sets[k]))]) for k in sets}
        report(name, flag, round(float(average_precision_score(y_oai, s["oai"]["sexual_minors"])),
                                 3))
    # the screen: MiniLM's max category score under a bar (99.5% of calib violating items
    # over it) skips the second encoder; the rest is decided by the second encoder's bars,
    # set on the calib items that pass the screen
    smax = {k: np.max([s1[k][c] for c in CODES if c in s1[k]], axis=0) for k in sets}
    bar = float(np.quantile(smax["calib"][viol["calib"]], 0.005))
    passed = {k: smax[k] >= bar for k in sets}
    gb = {c: float(np.quantile([s2["calib"][c][i] for i, it in enumerate(sets["calib"])
                                if it.labels.get(c) == 1 and passed["calib"][i]], 1 - a.recall))
          for c in CATS}
    flag = {k: passed[k] & np.array([any(s2[k][c][i] >= gb[c] for c in CATS)
                                     for i in range(len(sets[k]))]) for k in sets}
    report("screen", flag, None)
    res["screen"]["skip_second"] = {k: round(float(1 - passed[k].mean()), 3)
                                    for k in ("test", "xstest", "oai")}
    (a.out / f"ensemble_estimate_{a.second}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
