"""Trying a draft against the active policy: one item stage by stage, and evaluation sets with
metric deltas and flipped ids.

Why one shared pipeline: a second set of models per draft would double the memory of the
process serving the page; instead the trial pipeline (which never follows the active pointer)
switches policy (`Pipeline.use_policy`) under a lock, runs the active version, then the draft.
With llama.cpp a switch re-reads the system prompt (a few seconds on a CPU).

Evaluation reuses the evaluation runner (`evaluation.runner.evaluate`, logged to MLflow with
the draft's version), at most `limit` items per set so the page answers in minutes, and
reports paired deltas (draft minus active, same items) with bootstrap intervals: violating
items flagged, benign items flagged and blocked. Flipped items are listed by set and id only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from childguard.evaluation.compare import compare_predictions
from childguard.evaluation.predictions import Prediction
from childguard.policy import Policy
from childguard.schema import ContentItem, Verdict
from childguard.settings import Settings

__all__ = ["Delta", "EvalComparison", "StageView", "Trial"]


@dataclass(frozen=True)
class StageView:
    """What each stage did with one item under one policy version (no item text)."""

    policy_version: str
    rules: list[str]
    probe_scores: dict[str, float]
    gate: str
    judged: bool
    prompt: str
    judge_answer: str
    verdict: Verdict


@dataclass(frozen=True)
class Delta:
    name: str
    active: float
    draft: float
    lo: float
    hi: float

    @property
    def delta(self) -> float:
        return self.draft - self.active


@dataclass
class EvalComparison:
    datasets: list[str]
    items: int
    deltas: list[Delta]
    flipped: list[dict[str, Any]]
    runs: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"datasets": self.datasets, "items": self.items,
                "deltas": {d.name: {"active": round(d.active, 4), "draft": round(d.draft, 4),
                                    "delta": round(d.delta, 4), "ci95": [round(d.lo, 4),
                                                                         round(d.hi, 4)]}
                           for d in self.deltas},
                "flipped": self.flipped, "runs": self.runs}


class Trial:
    """The workbench's pipeline: one item, or evaluation sets, under two policy versions."""

    def __init__(self, settings: Settings, pipeline: Any) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._lock = threading.Lock()

    def try_text(self, text: str, policies: Sequence[Policy]) -> list[StageView]:
        from childguard.models.judge import render_item

        item = ContentItem(text=text)
        out = []
        with self._lock:
            for policy in policies:
                self.pipeline.use_policy(policy)
                prepared = self.pipeline.prepare(item)
                hashes = self.pipeline.hash_stage(prepared)
                signals, gate = self.pipeline.signals_and_gate([prepared])[0]
                judge = None
                if gate is not None and not gate.allowed and self.pipeline.judge is not None:
                    judge = self.pipeline.judge_stage_batch([prepared], [signals])[0]
                verdict = self.pipeline.decide(prepared, hashes=hashes, signals=signals,
                                               gate=gate, judge=judge)
                rendered = render_item(policy, self.pipeline.judge_input(prepared, signals))
                answer = ""
                if judge is not None and judge.output is not None:
                    o = judge.output
                    answer = (f"violation {o.violation:.2f}, category {o.category or 'none'}; "
                              f"{o.rationale}")
                elif judge is not None:
                    answer = f"judge failed: {judge.error}"
                out.append(StageView(
                    policy_version=policy.version,
                    rules=[f"{h.rule} ({h.category}, floor {h.floor})" for h in signals.rule_hits],
                    probe_scores={k: round(v, 3) for k, v in sorted(signals.probe_scores.items())},
                    gate=("allowed: " if gate is not None and gate.allowed else "to the judge: ")
                    + (gate.reason if gate is not None else "signals failed"),
                    judged=judge is not None,
                    prompt=rendered.system + "\n----- user -----\n" + rendered.user,
                    judge_answer=answer, verdict=verdict))
        return out

    def evaluate(self, datasets: Sequence[Any], active: Policy, draft: Policy, *,
                 limit: int = 50, log: bool = True) -> EvalComparison:
        from childguard.evaluation.runner import RunOptions, evaluate

        preds: dict[str, list[Prediction]] = {}
        runs: dict[str, str | None] = {}
        with self._lock:
            for name, policy in (("active", active), ("draft", draft)):
                self.pipeline.use_policy(policy)
                res = evaluate(self.settings, datasets, policy=policy, pipeline=self.pipeline,
                               options=RunOptions(limit=limit, progress=False,
                                                  run_name=f"workbench-{name}-{policy.version}",
                                                  tags={"childguard.workbench": name}),
                               log=log)
                preds[name], runs[name] = res.predictions, res.run_id
        flips, _, _ = compare_predictions(preds["active"], preds["draft"])
        return EvalComparison(
            datasets=[d.name for d in datasets], items=len(preds["draft"]),
            deltas=paired_deltas(preds["active"], preds["draft"]),
            flipped=[{"dataset": f.dataset, "id": f.id, "active": f.a, "draft": f.b,
                      "violating": any(v == 1 for v in f.labels.values())}
                     for f in flips], runs=runs)


def _violating(p: Prediction) -> bool:
    return any(v == 1 for v in p.labels.values())


def paired_deltas(active: Sequence[Prediction], draft: Sequence[Prediction], *,
                  n_boot: int = 1000, seed: int = 0) -> list[Delta]:
    """Flag / block rates under both versions on the same items, with a paired percentile
    bootstrap interval of the difference (items resampled together)."""
    a = {(p.dataset, p.id): p for p in active}
    b = {(p.dataset, p.id): p for p in draft}
    keys = sorted(set(a) & set(b))
    viol = np.array([_violating(a[k]) for k in keys], bool)
    flag_a = np.array([a[k].decision != "allow" for k in keys], float)
    flag_b = np.array([b[k].decision != "allow" for k in keys], float)
    block_a = np.array([a[k].decision == "block" for k in keys], float)
    block_b = np.array([b[k].decision == "block" for k in keys], float)
    rng = np.random.default_rng(seed)
    out = []
    for name, mask, xa, xb in (("violating flagged", viol, flag_a, flag_b),
                               ("benign flagged", ~viol, flag_a, flag_b),
                               ("benign blocked", ~viol, block_a, block_b)):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        diffs = xb[idx] - xa[idx]
        boots = [diffs[rng.integers(0, idx.size, idx.size)].mean() for _ in range(n_boot)]
        out.append(Delta(name, float(xa[idx].mean()), float(xb[idx].mean()),
                         float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))))
    return out
