"""Policy rules in the cascade: a hit always reaches the judge, its floor holds whatever the
judge says, and the rationale names the rule (never the matched words).

Rules here are written over neutral marker words (`zq...`), so no test text is harmful.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from pipeline_support import FixedJudge, RaisingJudge, probe_marker

from childguard.models.base import JudgeOutput
from childguard.pipeline import Pipeline
from childguard.policy import Policy
from childguard.rules import RuleSet, RulesSpec
from childguard.schema import ContentItem, Decision, Message, Status

PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def ruled(policy: Policy) -> Policy:
    """The real policy with marker rules: zqsecret (judge), zqsecret near zqchild (review,
    grooming), zqtrade (block, abuse_material_trade)."""
    spec = RulesSpec.model_validate({
        "terms": {"secret": ["zqsecret"], "child": ["zqchild"], "trade": ["zqtrade"]},
        "rules": [
            {"id": "m_secret", "category": "grooming", "floor": "judge", "all": ["secret"],
             "why": "secrecy marker", "must_match": ["{secret}"]},
            {"id": "m_secret_child", "category": "grooming", "floor": "review",
             "all": ["secret", "child"], "within": 8, "why": "secrecy near a child marker",
             "must_match": ["{secret} {child}"]},
            {"id": "m_trade", "category": "abuse_material_trade", "floor": "block",
             "all": ["trade"], "why": "trade marker", "must_match": ["{trade}"]},
        ],
    })
    return dataclasses.replace(policy, rules=RuleSet(spec))


def benign_judge(policy: Policy) -> FixedJudge:
    return FixedJudge(policy, JudgeOutput(violation=0.01, category=None,
                                          category_scores={c: 0.01 for c in policy.spec.codes},
                                          rationale="nothing wrong"))


def test_a_judge_floor_hit_reaches_the_judge_and_the_judge_decides(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    judge = benign_judge(ruled)
    p = make_pipeline(policy=ruled, judge=judge)
    v = p.classify(ContentItem(text="see you at practice zqsecret"))
    assert v.judged and len(judge.calls) == 1
    assert v.decision is Decision.ALLOW and v.status is Status.OK
    assert "policy rule(s) hit: m_secret" in v.rationale  # why the gate did not settle it
    assert "rule m_secret (grooming, floor judge, in message)" in v.rationale
    assert "zqsecret" not in v.rationale
    (sig,) = [s for s in v.signals if s.name == "rule.m_secret"]
    assert sig.category == "grooming" and sig.score is None
    assert sig.detail == {"floor": "judge", "where": "message", "lists": "secret"}


def test_without_a_hit_the_same_item_is_settled_by_the_gate(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    judge = benign_judge(ruled)
    v = make_pipeline(policy=ruled, judge=judge).classify(ContentItem(text="see you at practice"))
    assert not v.judged and judge.calls == [] and v.decision is Decision.ALLOW
    assert not any(s.name.startswith("rule.") for s in v.signals)


def test_a_review_floor_holds_when_the_judge_says_benign(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    p = make_pipeline(policy=ruled, judge=benign_judge(ruled))
    v = p.classify(ContentItem(text="zqchild, this is our zqsecret"))
    assert v.judged and v.decision is Decision.REVIEW and not v.report
    grooming = next(c for c in v.categories if c.code == "grooming")
    review_bar = ruled.thresholds()["grooming"].review
    assert grooming.decision is Decision.REVIEW and grooming.source == "rule"
    assert grooming.score == pytest.approx(review_bar)
    assert "rule m_secret_child sets at least review" in grooming.rationale
    assert "judge: nothing wrong" in v.rationale  # the judge's view is still shown


def test_a_block_floor_blocks_and_reports_a_reportable_category(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    v = make_pipeline(policy=ruled, judge=benign_judge(ruled)).classify(
        ContentItem(text="zqtrade"))
    assert v.decision is Decision.BLOCK and v.report
    top = v.top_category
    assert top is not None and top.code == "abuse_material_trade" and top.source == "rule"


def test_models_can_raise_a_category_above_its_floor(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    # the probe fires for grooming (score near 1): above the review floor, the higher stands
    p = make_pipeline(policy=ruled)
    v = p.classify(ContentItem(text=f"{probe_marker('grooming')} zqsecret zqchild"))
    grooming = next(c for c in v.categories if c.code == "grooming")
    assert grooming.decision is Decision.BLOCK and grooming.source != "rule"
    assert grooming.score > ruled.thresholds()["grooming"].block


def test_a_hit_split_across_the_conversation_counts_but_context_alone_does_not(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    p = make_pipeline(policy=ruled, judge=benign_judge(ruled))
    split = p.classify(ContentItem(text="remember: zqsecret",
                                   context=[Message(author="a", text="hey zqchild")]))
    assert split.decision is Decision.REVIEW
    assert "rule m_secret_child (grooming, floor review, in conversation)" in split.rationale
    reply = p.classify(ContentItem(text="ok bye",
                                   context=[Message(author="a", text="zqchild zqsecret")]))
    assert reply.decision is Decision.ALLOW and not any(
        s.name.startswith("rule.") for s in reply.signals)


def test_a_failed_judge_keeps_the_rule_floor_in_the_error_verdict(
        make_pipeline: PipelineFactory, ruled: Policy) -> None:
    v = make_pipeline(policy=ruled, judge=RaisingJudge(ruled)).classify(
        ContentItem(text="zqtrade"))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW  # fail closed: review
    top = v.top_category
    assert top is not None and top.code == "abuse_material_trade" and top.source == "rule"
    assert top.decision is Decision.BLOCK  # the reviewer sees what the floor says


def test_the_shipped_policy_has_rules_and_the_pipeline_runs_them(
        make_pipeline: PipelineFactory, policy: Policy) -> None:
    """The shipped rules' own example for text addressed to the classifier reaches the
    judge through the real policy (the example is benign evasion wording, not harmful)."""
    rule = next(r for r in policy.rules.rules if r.id == "classifier_directed_text")
    p = make_pipeline(policy=policy)
    v = p.classify(ContentItem(text=policy.rules.expand(rule.must_match[0])))
    assert v.judged and any(s.name == "rule.classifier_directed_text" for s in v.signals)
