"""What each block-FPR target would auto-block on calib: per-category block bars fitted the way
`childguard eval calibrate` fits them (split conformal on each category's calib negatives), and
the share of child_safety_v2 calib look-alikes and violating items, and of OpenAI train-half
benign and sexual/minors items, at or above any category's block bar. Ids, counts and rates
only; no text is read or printed.

    .venv/bin/python scripts/experiments/block_bars.py runs/protocol-s5 --fpr 0.01 0.005 0.002

Why: a block removes a post with no human in the loop, so a benign post blocked costs its author
more than a benign post reviewed costs a reviewer; the block target is a policy choice, made here
on calib before the test split is read. The rates are in-sample (the bars are fit on the same
calib items), so they under-state what new items see (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from childguard.evaluation import tracking
from childguard.evaluation.calibration import Targets, calibrate
from childguard.evaluation.compare import load_run
from childguard.evaluation.runner import load_run_policy
from childguard.settings import Settings

CODES = ("sexual_minors", "grooming", "sextortion", "endangerment")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path, help="a report_protocol_encoder.sh output directory")
    ap.add_argument("--fpr", type=float, nargs="+", default=[0.01, 0.005, 0.002, 0.001])
    ap.add_argument("--recall", type=float, default=0.95)
    args = ap.parse_args()
    run_id = json.loads((args.run_dir / "calib.json").read_text())["run_id"]
    settings = Settings.load()
    client = tracking.configure(settings)
    _, _, _, preds = load_run(client, run_id)
    policy = load_run_policy(settings, args.run_dir / "policy" / "child_safety", gate=True,
                             calibration=False)
    groups = {
        "v2_lookalikes": [p for p in preds if p.dataset.startswith("child_safety_v2")
                          and not any(v == 1 for v in p.labels.values())],
        "v2_violating": [p for p in preds if p.dataset.startswith("child_safety_v2")
                         and any(v == 1 for v in p.labels.values())],
        "oai_benign": [p for p in preds if p.dataset.startswith("openai")
                       and not any(v == 1 for v in p.labels.values())],
        "oai_sexual_minors": [p for p in preds if p.dataset.startswith("openai")
                              and p.labels.get("sexual_minors") == 1],
    }
    out: dict[str, object] = {"calib_run": run_id, "recall": args.recall,
                              "in_sample": True, "targets": {}}
    for fpr in args.fpr:
        cal = calibrate(preds, policy, Targets(recall=args.recall, block_fpr=fpr,
                                               gate_recall=0.97),
                        categories=list(CODES))
        block = {c: cal.categories[c].block for c in CODES}
        review = {c: cal.categories[c].review for c in CODES}
        row: dict[str, object] = {"block_bars": block}
        for name, items in groups.items():
            blocked = np.array([any(p.score(c) >= block[c] for c in CODES) for p in items])
            flagged = np.array([any(p.score(c) >= review[c] for c in CODES) for p in items])
            row[name] = {"n": len(items), "blocked": round(float(blocked.mean()), 4),
                         "flagged": round(float(flagged.mean()), 4)}
        out["targets"][str(fpr)] = row  # type: ignore[index]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
