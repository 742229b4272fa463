"""`eval compare RUN_A RUN_B`: what changed between two evaluation runs.

The policy author's question after `childguard policy diff` is "what does this wording change
do?": metric deltas answer it in aggregate and the flipped ids (same item, different decision)
answer it item by item, so a reviewer can look at exactly those items. Ids only: the items
themselves are looked up in the evaluation set by whoever is allowed to see them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from childguard.evaluation.predictions import PREDICTIONS_FILE, Prediction, read_predictions


@dataclass(frozen=True)
class MetricDelta:
    name: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return self.b - self.a


@dataclass(frozen=True)
class Flip:
    id: str
    dataset: str
    a: str
    b: str
    labels: dict[str, int]


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    params_changed: dict[str, tuple[str | None, str | None]]
    metrics: list[MetricDelta]
    flipped: list[Flip]
    only_in_a: list[str]
    only_in_b: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "params_changed": {k: {"a": a, "b": b} for k, (a, b) in self.params_changed.items()},
            "metrics": [{"name": m.name, "a": m.a, "b": m.b, "delta": m.delta}
                        for m in self.metrics],
            "flipped": [asdict(f) for f in self.flipped],
            "flipped_ids": [f.id for f in self.flipped],
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
        }


def compare_predictions(a: Sequence[Prediction], b: Sequence[Prediction]
                        ) -> tuple[list[Flip], list[str], list[str]]:
    """Items (by dataset + id) whose decision differs, and ids present in one run only."""
    ia = {(p.dataset, p.id): p for p in a}
    ib = {(p.dataset, p.id): p for p in b}
    flips = [Flip(id=k[1], dataset=k[0], a=ia[k].decision, b=ib[k].decision,
                  labels=dict(ia[k].labels))
             for k in sorted(set(ia) & set(ib)) if ia[k].decision != ib[k].decision]
    only_a = sorted(k[1] for k in set(ia) - set(ib))
    only_b = sorted(k[1] for k in set(ib) - set(ia))
    return flips, only_a, only_b


def compare_metrics(ma: dict[str, float], mb: dict[str, float]) -> list[MetricDelta]:
    out = []
    for name in sorted(set(ma) | set(mb)):
        va, vb = ma.get(name), mb.get(name)
        out.append(MetricDelta(name,
                               None if va is None or not math.isfinite(va) else float(va),
                               None if vb is None or not math.isfinite(vb) else float(vb)))
    return out


def load_run(client: Any, run_ref: str) -> tuple[str, dict[str, float], dict[str, str],
                                                  list[Prediction]]:
    """(run id, metrics, params, predictions) of an eval run, by id or run name."""
    from childguard.evaluation import tracking

    run = tracking.resolve_run(client, run_ref)
    run_id = run.info.run_id
    path = tracking.download(client, run_id, PREDICTIONS_FILE)
    preds = read_predictions(Path(path))
    return run_id, dict(run.data.metrics), dict(run.data.params), preds


def compare_runs(client: Any, run_a: str, run_b: str) -> Comparison:
    ida, ma, pa, preds_a = load_run(client, run_a)
    idb, mb, pb, preds_b = load_run(client, run_b)
    flips, only_a, only_b = compare_predictions(preds_a, preds_b)
    params_changed = {k: (pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb))
                      if pa.get(k) != pb.get(k)}
    return Comparison(ida, idb, params_changed, compare_metrics(ma, mb), flips, only_a, only_b)


#: the metrics shown in the table by default (all of them go to --json)
HEADLINE_SUFFIXES = (".auprc", ".recall", ".precision", ".fpr", "review_rate", "judge_call_rate",
                     "latency_p50_ms", ".recall_at_fpr_1pct", ".recall_at_fpr_5pct", ".ece")


def headline(metrics: Sequence[MetricDelta], *, all_metrics: bool = False) -> list[MetricDelta]:
    if all_metrics:
        return list(metrics)
    return [m for m in metrics if m.name.endswith(HEADLINE_SUFFIXES)]
