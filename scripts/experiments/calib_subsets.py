"""Compare two protocol runs (report_protocol_encoder.sh outputs) on the calib split only,
by subset of child_safety_v2 calib (items of one train part's author vs the rest), at each run's
own calibrated review bars (probe scores only: the policy rules are the same in both runs and
left out): look-alikes flagged, violating flagged, paired bootstrap intervals
of the differences. Ids, counts and rates only; no text is read or printed.

    .venv/bin/python scripts/experiments/calib_subsets.py runs/A runs/B --prefix cs2-tl3-

Why: a new train part (another author's messages) should lower the look-alikes flagged on
items of authors the model did not train on; comparing on the calib items of the earlier parts
(neither run trained on them) says whether it does, without reading the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from childguard.evaluation import tracking
from childguard.evaluation.compare import load_run
from childguard.settings import Settings

CODES = ("sexual_minors", "grooming", "sextortion", "endangerment")


def flagged(run_dir: Path) -> tuple[dict[str, bool], dict[str, bool], dict[str, float]]:
    """(item id -> flagged at the run's bars, item id -> violating, bars) for v2 calib items."""
    run_id = json.loads((run_dir / "calib.json").read_text())["run_id"]
    cal = yaml.safe_load((run_dir / "policy" / "child_safety" / "calibration.yaml").read_text())
    bars = {c: float(cal["categories"][c]["review"]) for c in CODES}
    settings = Settings.load()
    client = tracking.configure(settings)
    _, _, _, preds = load_run(client, run_id)
    out, viol = {}, {}
    for p in preds:
        if not p.dataset.startswith("child_safety_v2"):
            continue
        out[p.id] = p.status == "error" or any(p.score(c) >= bars[c] for c in CODES)
        viol[p.id] = any(v == 1 for v in p.labels.values())
    return out, viol, bars


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--prefix", default="cs2-tl3-")
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()
    fa, viol, bars_a = flagged(args.a)
    fb, _, bars_b = flagged(args.b)
    ids = sorted(set(fa) & set(fb))
    rng = np.random.default_rng(0)
    report: dict[str, object] = {"a": str(args.a), "b": str(args.b), "bars_a": bars_a,
                                 "bars_b": bars_b, "subsets": {}}
    for subset, keep in (("new_part", lambda i: i.startswith(args.prefix)),
                         ("earlier_parts", lambda i: not i.startswith(args.prefix)),
                         ("all", lambda i: True)):
        for side, want in (("lookalikes", False), ("violating", True)):
            sel = [i for i in ids if keep(i) and viol[i] == want]
            if not sel:
                continue
            a = np.array([fa[i] for i in sel], float)
            b = np.array([fb[i] for i in sel], float)
            idx = rng.integers(0, len(sel), (args.boot, len(sel)))
            diff = (b[idx] - a[idx]).mean(axis=1)
            report["subsets"][f"{subset}.{side}"] = {  # type: ignore[index]
                "n": len(sel), "a_flagged": round(a.mean(), 3), "b_flagged": round(b.mean(), 3),
                "b_minus_a": round(float(b.mean() - a.mean()), 3),
                "ci95": [round(float(np.quantile(diff, 0.025)), 3),
                         round(float(np.quantile(diff, 0.975)), 3)]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
