"""The judge's labels on public sets: false positives on XSTest's safe prompts, recall on the
OpenAI moderation dev set's sexual/minors rows (S3 == 1). Prints JSON with counts, rates and
row ids only (never text).

    nice -n 10 .venv/bin/python benchmarks/judge_labels.py [--model ...] [--xstest-limit N]
        [--threshold 0.5] > judge_labels.json

Ids: XSTest's `id` column; moderation rows have no id, so `mod-dev-<line index>` (0-based)
in ../shared/datasets/openai_moderation/samples-dev.jsonl. A row counts as flagged when
P(violation) >= --threshold (0.5 = the label the judge would write); the lowest review
threshold of the policy is reported too, since that is what sends an item to review.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from childguard.models import weights
from childguard.models.base import JudgeInput
from childguard.models.judge_llamacpp import LlamaCppJudge
from childguard.policy import load_policy
from childguard.settings import Settings

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=weights.JUDGE_1_5B)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--xstest-limit", type=int, default=250)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="write {id: P(violation)} here every 10 rows (ids and scores only)")
    args = ap.parse_args()
    settings = Settings.load()
    policy = load_policy(settings.policies_dir / settings.policy)
    review_t = min(c.thresholds.review for c in policy.spec.categories)
    weights.pull_one(settings, args.model)
    judge = LlamaCppJudge(weights.model_path(settings, args.model), policy,
                          n_threads=args.threads, n_ctx=settings.judge.n_ctx,
                          rationale_tokens=0)

    xs = [r for r in csv.DictReader((DATASETS / "xstest" / "xstest_prompts.csv").open())
          if r["label"] == "safe"][: args.xstest_limit]
    mod = [(f"mod-dev-{i}", json.loads(line)) for i, line in
           enumerate((DATASETS / "openai_moderation" / "samples-dev.jsonl").open())]
    s3 = [(i, r) for i, r in mod if r.get("S3") == 1]

    seen: dict[str, float] = {}

    def run(rows: list[tuple[str, str]]) -> dict[str, object]:
        scores: dict[str, float] = {}
        errors: list[str] = []
        t0 = time.perf_counter()
        for n, (rid, text) in enumerate(rows, 1):
            out = judge.judge(JudgeInput(item_id=rid, text=text))
            if out.status.value != "ok":
                errors.append(rid)
            scores[rid] = seen[rid] = out.violation
            if n % 10 == 0:
                print(f"{n}/{len(rows)} {time.perf_counter() - t0:.0f}s", file=sys.stderr)
                if args.checkpoint:
                    args.checkpoint.write_text(json.dumps(seen))
        flagged = sorted(k for k, v in scores.items() if v >= args.threshold)
        review = sorted(k for k, v in scores.items() if v >= review_t)
        return {"n": len(rows), "flagged": flagged, "at_review_threshold": review,
                "errors": errors, "seconds": round(time.perf_counter() - t0, 1),
                "scores": {k: round(v, 4) for k, v in scores.items()}}

    sres = run([(i, r["prompt"]) for i, r in s3])
    xres = run([(f"xstest-{r['id']}", r["prompt"]) for r in xs])
    nx, ns = int(xres["n"]), int(sres["n"])  # type: ignore[call-overload]
    result = {
        "model": args.model, "policy_version": policy.version, "threshold": args.threshold,
        "review_threshold": review_t, "loadavg": os.getloadavg(),
        "xstest_safe": {**xres,
                        "false_positive_rate": round(len(xres["flagged"]) / nx, 4),  # type: ignore[arg-type]
                        "review_rate": round(len(xres["at_review_threshold"]) / nx, 4)},  # type: ignore[arg-type]
        "openai_moderation_s3": {**sres,
                                 "recall": round(len(sres["flagged"]) / ns, 4),  # type: ignore[arg-type]
                                 "recall_at_review": round(
                                     len(sres["at_review_threshold"]) / ns, 4)},  # type: ignore[arg-type]
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    judge.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
