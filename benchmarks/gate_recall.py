"""What the gate costs in recall: the violating items of an eval run that the gate let skip the
judge and that nothing flagged, judged again with the same judge and policy.

Why this way: the gate's promise is throughput without losing recall. Measuring recall with the
gate off means judging every item of the set (hours on this CPU); but the two runs differ only
on the items the gate settled. Items the gate settled and a probe flagged anyway are flagged in
both. So the recall lost is exactly the gated, unflagged positives that the judge would flag:
this script judges those few items and prints, per category, recall with the gate (from the
run) and recall with the gate off (the same plus the judge's catches). Ids and numbers only.

    .venv/bin/python benchmarks/gate_recall.py RUN_ID_OR_NAME -d xstest \
        -d 'evaluation_sets/child_safety_v1.jsonl[test]'     # the run's sets, as eval run -d
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", help="eval run id or name (made with the gate on)")
    ap.add_argument("-d", "--dataset", action="append", default=[],
                    help="the run's evaluation sets, as given to `eval run -d` (repeatable)")
    ap.add_argument("--datasets-dir", type=Path)
    args = ap.parse_args()

    from childguard.evaluation import tracking
    from childguard.evaluation.compare import load_run
    from childguard.evaluation.datasets import load_dataset
    from childguard.evaluation.runner import build_text_pipeline, load_run_policy
    from childguard.schema import ContentItem
    from childguard.settings import Settings

    settings = Settings.load()
    client = tracking.configure(settings)
    run_id, _, params, preds = load_run(client, args.run)
    refs = {p.dataset for p in preds}
    texts: dict[tuple[str, str], Any] = {}
    for ref in args.dataset:
        ds = load_dataset(ref, args.datasets_dir)
        if ds.name in refs:
            texts.update({(ds.name, it.id): it for it in ds})
    # gated (not judged) violating items that the run did not flag
    lost = [p for p in preds if not p.judged and p.status == "ok" and not p.flagged
            and any(v == 1 for v in p.labels.values())]
    missing = sorted({p.dataset for p in lost if (p.dataset, p.id) not in texts})
    if missing:
        ap.error(f"give the run's sets with -d; not loaded: {', '.join(missing)}")
    policy = load_run_policy(settings, params.get("policy_path"), gate=True,
                             calibration=params.get("calibration") == "True")
    thresholds = policy.thresholds()
    caught: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    if lost:
        pipeline = build_text_pipeline(settings, policy)
        try:
            for p in lost:
                it = texts[(p.dataset, p.id)]
                prepared = pipeline.prepare(ContentItem(id=p.id, text=it.text,
                                                        context=it.context))
                out = pipeline.judge_stage(prepared, None).output
                if out is None:
                    continue
                hits = [c for c, s in out.category_scores.items()
                        if p.labels.get(c) == 1 and s >= thresholds[c].review]
                for c in hits:
                    caught.setdefault(c, []).append(p.id)
        finally:
            pipeline.close()
    report: dict[str, Any] = {"run": run_id, "gate_allow_below": params.get("gate_allow_below"),
                              "gated_unflagged_positives": len(lost),
                              "judge_seconds": round(time.perf_counter() - t0, 1),
                              "per_dataset": {}}
    for ds in sorted(refs):
        rows = [p for p in preds if p.dataset == ds]
        codes = sorted({c for p in rows for c in p.labels})
        per: dict[str, Any] = {}
        for code in codes:
            pos = [p for p in rows if p.labels.get(code) == 1]
            if not pos:
                continue
            with_gate = sum(p.category_flagged(code) for p in pos)
            extra = sum(1 for p in pos if p.id in caught.get(code, []))
            per[code] = {"positives": len(pos), "recall_gate_on": round(with_gate / len(pos), 4),
                         "recall_gate_off": round((with_gate + extra) / len(pos), 4),
                         "lost_to_gate_ids": sorted(i for i in caught.get(code, [])
                                                    if i in {p.id for p in pos})}
        report["per_dataset"][ds] = per
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
