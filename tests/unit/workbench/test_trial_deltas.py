"""Paired deltas between the active version's and a draft's predictions on the same items."""

from __future__ import annotations

from childguard.evaluation.predictions import Prediction
from childguard.workbench.trial import paired_deltas


def _p(i: int, viol: bool, decision: str) -> Prediction:
    return Prediction(id=f"i{i}", dataset="set", labels={"grooming": int(viol)}, scores={},
                      category_decisions={}, decision=decision, status="ok", judged=False,
                      latency_ms=1.0)


def test_a_draft_that_flags_two_more_benign_items() -> None:
    active = [_p(i, i < 4, "review" if i < 4 else "allow") for i in range(10)]
    draft = [_p(i, i < 4, "review" if i < 4 or i in (5, 6) else "allow") for i in range(10)]
    d = {x.name: x for x in paired_deltas(active, draft)}
    assert d["violating flagged"].delta == 0.0
    assert d["benign flagged"].active == 0.0
    assert abs(d["benign flagged"].draft - 2 / 6) < 1e-9
    b = d["benign flagged"]  # 2 of 6 flips: the interval holds the delta, and 0 (small set)
    assert b.lo == 0.0 < b.delta < b.hi <= 1.0
    assert d["benign blocked"].delta == 0.0
    # items only one side has are left out of the pairing
    assert paired_deltas(active[:5], draft[5:]) == []
