"""The shared types: frozen, closed to unknown keys, JSON round-trips, fail-closed invariant."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    HashMatch,
    Message,
    ReviewDecision,
    ReviewOutcome,
    Severity,
    Signal,
    Status,
    Verdict,
    error_verdict,
)


def _verdict() -> Verdict:
    return Verdict(
        item_id="abc",
        decision=Decision.REVIEW,
        categories=(CategoryScore(code="grooming", score=0.6, decision=Decision.REVIEW,
                                  rationale="asks for secrecy"),),
        signals=(Signal(name="probe.minilm", category="grooming", score=0.4,
                        detail={"k": 1}),),
        hash_matches=(HashMatch(bank="b", signal_type="pdq", distance=3, entry_id=7,
                                severity=Severity.CRITICAL),),
        policy_id="child_safety",
        policy_version="0123456789abcdef",
        model_versions={"judge": "qwen"},
        timings_ms={"judge": 12.5},
        judged=True,
    )


def test_verdict_json_round_trip() -> None:
    v = _verdict()
    again = Verdict.model_validate_json(v.model_dump_json())
    assert again == v
    assert again.top_category is not None and again.top_category.code == "grooming"
    assert again.score_of("grooming") == 0.6
    assert again.score_of("sextortion") is None


def test_content_item_round_trip_with_image_bytes() -> None:
    item = ContentItem(text="hello", image=b"\x89PNG\r\n", context=(Message(text="hi"),),
                       metadata={"a": 1})
    js = item.model_dump_json()
    assert base64.b64encode(b"\x89PNG\r\n").decode() in js
    again = ContentItem.model_validate_json(js)
    assert again == item and again.image == b"\x89PNG\r\n" and again.has_image


def test_content_item_rejects_bad_base64_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="base64"):
        ContentItem.model_validate_json('{"image": "not base64!!"}')


@pytest.mark.parametrize("model,payload", [
    (ContentItem, {"text": "x", "colour": "red"}),
    (Verdict, {"item_id": "a", "decision": "allow", "extra": 1}),
    (Signal, {"name": "n", "bogus": True}),
    (ReviewDecision, {"item_id": "a", "outcome": "allow", "reviewer": "r", "x": 1}),
])
def test_unknown_keys_are_rejected(model: type, payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(payload)


def test_types_are_frozen() -> None:
    v = _verdict()
    with pytest.raises(ValidationError):
        v.decision = Decision.ALLOW  # type: ignore[misc]


def test_missing_content_is_rejected() -> None:
    with pytest.raises(ValidationError, match="missing content"):
        ContentItem(text="")


def test_scores_are_probabilities() -> None:
    with pytest.raises(ValidationError):
        CategoryScore(code="x", score=1.5, decision=Decision.ALLOW)


def test_error_status_can_never_allow() -> None:
    with pytest.raises(ValidationError, match="fail closed"):
        Verdict(item_id="a", decision=Decision.ALLOW, status=Status.ERROR)
    v = error_verdict("a", "judge", "timeout after 30s")
    assert v.decision is Decision.REVIEW and v.status is Status.ERROR
    assert v.errors == ("judge: timeout after 30s",)


def test_review_decision_maps_outcome_to_decision() -> None:
    d = ReviewDecision(item_id="a", outcome=ReviewOutcome.ESCALATE, reviewer="r1")
    assert d.decision is Decision.BLOCK and d.report
    assert ReviewDecision.model_validate_json(d.model_dump_json()) == d
    allow = ReviewDecision(item_id="a", outcome="allow", reviewer="r1")
    assert allow.decision is Decision.ALLOW and not allow.report


def test_severity_rank_orders() -> None:
    assert Severity.LOW.rank < Severity.MEDIUM.rank < Severity.HIGH.rank < Severity.CRITICAL.rank
