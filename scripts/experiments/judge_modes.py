"""The packaged judge asked one question (`judge.mode: single`) or one yes/no question per
category (`per_category`): which separates violating messages from their benign look-alikes
better? Selected on child_safety_v2 *train* rows only (a seeded, stratified sample), never on
calib or test.

Why: issue 21 asks for per-category questions "where they measure better"; the look-alikes are
where the product is weakest (a quarter flagged), and the judge is the stage that could lower
them. Per item and mode the judge's violation probability (single) or its highest category
probability (per_category) is kept in `<out>/judge_modes.jsonl` (ids and scores, no text), so
a killed run resumes. Reported: AUROC and AUPRC (violating vs look-alike) with bootstrap
intervals, and the look-alikes flagged at the score that keeps 95% of the sample's violating
items.

    .venv/bin/python scripts/experiments/judge_modes.py --out runs/judge-modes --per-class 60
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np

V2 = "evaluation_sets/child_safety_v2.jsonl"


def main() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from childguard.evaluation.datasets import load_dataset
    from childguard.models.base import JudgeInput
    from childguard.normalize import normalize_text
    from childguard.pipeline.assembly import build_judge_for
    from childguard.policy_calibration import load_calibrated_policy
    from childguard.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=60)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    items = list(load_dataset(V2).split("train"))
    viol = [it for it in items if any(v == 1 for v in it.labels.values())]
    benign = [it for it in items if not any(v == 1 for v in it.labels.values())]
    rng = random.Random(0)
    sample = rng.sample(viol, min(a.per_class, len(viol))) + rng.sample(
        benign, min(a.per_class, len(benign)))
    cache = a.out / "judge_modes.jsonl"
    done: dict[tuple[str, str], float] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["mode"], r["id"])] = r["score"]
    settings = Settings()
    base = load_calibrated_policy(settings.policies_dir / "child_safety")
    for mode in ("single", "per_category"):
        spec = base.spec.model_copy(update={"judge": base.spec.judge.model_copy(
            update={"mode": mode})})
        policy = dataclasses.replace(base, spec=spec)
        todo = [it for it in sample if (mode, it.id) not in done]
        if not todo:
            continue
        judge = build_judge_for(settings, policy)
        t0 = time.time()
        with cache.open("a") as fh:
            for it in todo:
                out = judge.judge(JudgeInput(
                    item_id=it.id, text=it.text, normalized=normalize_text(it.text or ""),
                    context=tuple(it.context)))
                score = (out.violation if mode == "single"
                         else max(out.category_scores.values(), default=out.violation))
                done[(mode, it.id)] = float(score)
                fh.write(json.dumps({"mode": mode, "id": it.id, "score": float(score),
                                     "status": out.status.value}) + "\n")
                fh.flush()
        judge.close()
        print(json.dumps({"mode": mode, "items": len(todo),
                          "seconds": round(time.time() - t0)}), flush=True)
    y = np.array([int(any(v == 1 for v in it.labels.values())) for it in sample])
    res: dict = {"sample": {"violating": int(y.sum()), "lookalikes": int((1 - y).sum()),
                            "split": "train", "seed": 0}}
    brng = np.random.default_rng(0)
    for mode in ("single", "per_category"):
        s = np.array([done[(mode, it.id)] for it in sample])
        boots_auc, boots_ap = [], []
        for _ in range(1000):
            idx = brng.integers(0, len(y), len(y))
            if 0 < y[idx].sum() < len(idx):
                boots_auc.append(roc_auc_score(y[idx], s[idx]))
                boots_ap.append(average_precision_score(y[idx], s[idx]))
        bar = float(np.quantile(s[y == 1], 0.05))
        res[mode] = {
            "auroc": round(float(roc_auc_score(y, s)), 3),
            "auroc_ci": [round(float(np.percentile(boots_auc, q)), 3) for q in (2.5, 97.5)],
            "auprc": round(float(average_precision_score(y, s)), 3),
            "auprc_ci": [round(float(np.percentile(boots_ap, q)), 3) for q in (2.5, 97.5)],
            "lookalikes_flagged_at_recall95": round(float((s[y == 0] >= bar).mean()), 3),
        }
    print(json.dumps(res, indent=1))
    (a.out / "judge_modes.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
