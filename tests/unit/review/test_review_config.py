"""The labelling config generated from the policy, and the annotation <-> outcome mapping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from review_unit_support import policy, review_verdict

from childguard.errors import UserError
from childguard.review_bridge.config import (
    CATEGORIES_FIELD,
    DECISION_CHOICES,
    DECISION_FIELD,
    MODEL_VERSION,
    annotation_result,
    label_config,
    parse_annotation,
    prediction,
    suggested_outcome,
)
from childguard.schema import Decision, ReviewOutcome, Verdict


def test_config_is_xml_with_policy_choices_and_wellness_style() -> None:
    pol = policy()
    root = ET.fromstring(label_config(pol))
    style = root.find("Style")
    assert style is not None and "blur(" in style.text and "grayscale(100%)" in style.text
    # revealing needs a deliberate hover (a delay), not a pointer passing by
    assert ":hover" in style.text and "1.2s" in style.text
    choices = {c.get("name"): [x.get("value") for x in c.findall("Choice")]
               for c in root.iter("Choices")}
    assert choices[DECISION_FIELD] == list(DECISION_CHOICES)
    assert choices[CATEGORIES_FIELD] == list(pol.spec.codes)
    image_wrappers = [v for v in root.iter("View") if v.get("className") == "cg-media"]
    assert len(image_wrappers) == 1 and image_wrappers[0].find("Image") is not None
    assert not list(root.iter("Video")) and not list(root.iter("Audio"))
    headers = " ".join(h.get("value", "") for h in root.iter("Header"))
    for cat in pol.spec.categories:
        assert cat.definition.strip() in headers


def test_annotation_round_trip() -> None:
    pol = policy()
    for outcome in ReviewOutcome:
        res = annotation_result(outcome, ["grooming", "sextortion"], "reason")
        parsed = parse_annotation(res, pol)
        assert parsed.outcome is outcome
        assert parsed.categories == ("grooming", "sextortion")
        assert parsed.comment == "reason"


def test_annotation_without_decision_and_unknown_codes() -> None:
    pol = policy()
    with pytest.raises(UserError, match="no 'decision'"):
        parse_annotation([{"from_name": CATEGORIES_FIELD, "value": {"choices": ["grooming"]}}],
                         pol)
    res = [{"from_name": DECISION_FIELD, "value": {"choices": ["block"]}},
           {"from_name": CATEGORIES_FIELD, "value": {"choices": ["grooming", "not_a_code"]}}]
    assert parse_annotation(res, pol).categories == ("grooming",)


def test_suggestion_follows_the_review_band() -> None:
    pol = policy()
    th = pol.spec.category("grooming").thresholds
    low = review_verdict("a", pol, score=th.review + 0.01)
    high = review_verdict("b", pol, score=th.block - 0.01)
    assert suggested_outcome(low, pol) is ReviewOutcome.ALLOW
    assert suggested_outcome(high, pol) is ReviewOutcome.ESCALATE  # grooming must be reported
    errored = Verdict(item_id="c", decision=Decision.REVIEW, errors=("judge: timeout",))
    assert suggested_outcome(errored, pol) is ReviewOutcome.BLOCK  # fail closed


def test_prediction_carries_categories_scores_and_rationale() -> None:
    pol = policy()
    pred = prediction(review_verdict("a", pol, code="sextortion", score=0.7), pol)
    assert pred["model_version"] == MODEL_VERSION and pred["score"] == 0.7
    by_name = {r["from_name"]: r["value"] for r in pred["result"]}
    assert by_name[CATEGORIES_FIELD]["choices"] == ["sextortion"]
    assert "sextortion 0.70" in by_name["model_suggestion"]["text"][0]


def test_model_summary_names_the_policy_rules_that_fired() -> None:
    from childguard.review_bridge.config import model_summary
    from childguard.schema import Signal

    pol = policy()
    plain = review_verdict("r1", pol)
    assert "Policy rules" not in model_summary(plain)
    ruled = plain.model_copy(update={"signals": (
        Signal(name="rule.grooming_secrecy_with_child", category="grooming",
               detail={"floor": "review", "where": "message", "lists": "secrecy,minor"}),
        Signal(name="rule.classifier_directed_text", detail={"floor": "judge"}),
        Signal(name="probe.text", category="grooming", score=0.4),
    )})
    line = next(x for x in model_summary(ruled).splitlines() if x.startswith("Policy rules"))
    assert line == ("Policy rules: grooming_secrecy_with_child (grooming, floor review), "
                    "classifier_directed_text (no category, floor judge)")
