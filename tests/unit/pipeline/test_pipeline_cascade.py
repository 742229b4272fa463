"""Every branch of the cascade, with the packaged reference models and the real policy."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pytest
from pipeline_support import (
    CountingEmbedder,
    FakeHashCheck,
    FakeHashes,
    FixedJudge,
    RaisingEmbedder,
    RaisingJudge,
    RecordingJudge,
    SlowJudge,
    bank_match,
    png_bytes,
    probe_marker,
)

from childguard.models.base import JudgeOutput
from childguard.models.reference_signals import (
    ReferenceClipEmbedder,
    ReferenceImageSafety,
    ReferenceOcr,
)
from childguard.normalize import normalize_text
from childguard.pipeline import JudgeResult, Pipeline
from childguard.policy import Policy
from childguard.schema import ContentItem, Decision, Message, Status

BENIGN = "What time does football practice start tomorrow? I will bring the oranges."
PipelineFactory = Callable[..., Pipeline]


def flagged(code: str) -> str:
    """Text that makes the probe of `code` fire and the reference judge say `code`."""
    return f"note {probe_marker(code)} cg-test:{code}"


def with_gate(policy: Policy, **kw: object) -> Policy:
    gate = policy.spec.gate.model_copy(update=kw)
    return dataclasses.replace(policy, spec=policy.spec.model_copy(update={"gate": gate}))


# -- gate -----------------------------------------------------------------------------------


def test_benign_text_is_allowed_by_the_gate_without_the_judge(make_pipeline: PipelineFactory):
    p = make_pipeline()
    v = p.classify(ContentItem(text=BENIGN))
    assert v.decision is Decision.ALLOW and v.status is Status.OK
    assert not v.judged
    assert p.judge.calls == []  # type: ignore[union-attr]
    assert "gate" in v.rationale and "judge not called" in v.rationale
    assert {"prepare", "signals", "gate", "decide", "total"} <= set(v.timings_ms)
    assert "judge" not in v.timings_ms and "hash" not in v.timings_ms  # no image: no hash stage
    assert all(c.decision is Decision.ALLOW and c.source == "probe" for c in v.categories)
    assert {s.name for s in v.signals} == {"probe.text"}


def test_probe_above_allow_below_sends_the_item_to_the_judge(make_pipeline: PipelineFactory):
    p = make_pipeline()
    v = p.classify(ContentItem(text=flagged("grooming")))
    assert v.judged
    assert len(p.judge.calls) == 1  # type: ignore[union-attr]
    assert v.decision is Decision.BLOCK
    assert v.top_category is not None and v.top_category.code == "grooming"
    # the policy combines with max: the judge was asked and agrees; the higher score stands
    assert v.top_category.source in ("judge", "probe")
    assert any(s.name == "judge" and s.category == "grooming" and (s.score or 0) > 0.9
               for s in v.signals)
    assert "judge" in v.timings_ms


def test_without_probes_every_item_is_judged(make_pipeline: PipelineFactory):
    p = make_pipeline(probes=None)
    v = p.classify(ContentItem(text=BENIGN))
    assert v.judged and v.decision is Decision.ALLOW
    assert len(p.judge.calls) == 1  # type: ignore[union-attr]
    assert v.model_versions["probes"] == "unavailable"


def test_without_probes_gate_can_run_when_the_policy_does_not_require_them(
    make_pipeline: PipelineFactory, policy: Policy
):
    # no probe scores for the text: an unscored part is never assumed benign
    p = make_pipeline(probes=None, policy=with_gate(policy, require_probes=False))
    v = p.classify(ContentItem(text=BENIGN))
    assert v.judged


def test_gate_can_require_a_probe_for_every_text_category(
    make_pipeline: PipelineFactory, probes
):
    from childguard.models.probes import ProbeSet
    from childguard.pipeline import ThresholdGate

    partial = ProbeSet(embedder=probes.embedder, dim=probes.dim,
                       probes={k: v for k, v in probes.probes.items() if k != "grooming"})
    assert not make_pipeline(probes=partial).classify(ContentItem(text=BENIGN)).judged
    strict = make_pipeline(probes=partial, gate_policy=ThresholdGate(require_all_categories=True))
    v = strict.classify(ContentItem(text=BENIGN))
    assert v.judged and "no probe for grooming" in v.rationale


def test_disabled_gate_judges_everything(make_pipeline: PipelineFactory, policy: Policy):
    p = make_pipeline(policy=with_gate(policy, enabled=False))
    v = p.classify(ContentItem(text=BENIGN))
    assert v.judged and v.decision is Decision.ALLOW


def test_gate_threshold_comes_from_the_policy(make_pipeline: PipelineFactory, policy: Policy):
    # allow_below 0 -> nothing is below it -> everything goes to the judge
    p = make_pipeline(policy=with_gate(policy, allow_below=0.0))
    assert p.classify(ContentItem(text=BENIGN)).judged


# -- decisions and thresholds ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.1, Decision.ALLOW), (0.2999, Decision.ALLOW), (0.30, Decision.REVIEW),
     (0.6, Decision.REVIEW), (0.90, Decision.BLOCK), (0.99, Decision.BLOCK)],
)
def test_policy_thresholds_map_scores_to_decisions(
    make_pipeline: PipelineFactory, policy: Policy, score: float, expected: Decision
):
    # sexual_minors: review 0.30, block 0.90 in the policy
    th = policy.thresholds()["sexual_minors"]
    assert (th.review, th.block) == (0.30, 0.90)
    judge = RecordingJudge(policy, scores={"item-1": {"sexual_minors": score}})
    p = make_pipeline(judge=judge, probes=None)
    v = p.classify(ContentItem(id="item-1", text=BENIGN))
    assert v.decision is expected
    assert v.score_of("sexual_minors") == pytest.approx(score)
    cat = next(c for c in v.categories if c.code == "sexual_minors")
    assert cat.decision is expected
    assert v.report is (expected is Decision.BLOCK)


def test_item_decision_is_the_most_severe_category(make_pipeline: PipelineFactory, policy):
    judge = RecordingJudge(
        policy, scores={"x": {"endangerment": 0.5, "sexualised_commentary": 0.95}}
    )
    v = make_pipeline(judge=judge, probes=None).classify(ContentItem(id="x", text=BENIGN))
    decisions = {c.code: c.decision for c in v.categories}
    assert decisions["endangerment"] is Decision.REVIEW
    assert decisions["sexualised_commentary"] is Decision.BLOCK
    assert v.decision is Decision.BLOCK
    # sexualised_commentary is not reportable in the policy
    assert v.report is False
    assert "sexualised_commentary 0.95" in v.rationale


@pytest.mark.parametrize("code", ["sexual_minors", "grooming", "sextortion",
                                  "abuse_material_trade"])
def test_block_in_a_reportable_category_sets_report(make_pipeline: PipelineFactory, code):
    v = make_pipeline().classify(ContentItem(text=flagged(code)))
    assert v.decision is Decision.BLOCK and v.report is True
    assert "report" in v.rationale


def test_review_is_never_reported(make_pipeline: PipelineFactory, policy: Policy):
    judge = RecordingJudge(policy, scores={"r": {"sexual_minors": 0.5}})
    v = make_pipeline(judge=judge, probes=None).classify(ContentItem(id="r", text=BENIGN))
    assert v.decision is Decision.REVIEW and v.report is False


def test_verdict_names_policy_and_models(make_pipeline: PipelineFactory, policy: Policy):
    p = make_pipeline()
    v = p.classify(ContentItem(text=flagged("sextortion"), source="chat", external_id="e-1"))
    assert v.policy_id == "child_safety" and v.policy_version == policy.version
    assert v.model_versions["judge"].startswith("reference-judge@")
    assert v.model_versions["text_embedder"].startswith("reference-text")
    assert v.model_versions["probes"].startswith("probes:reference:")
    assert v.model_versions["clip"] == "unavailable"
    assert (v.source, v.external_id) == ("chat", "e-1")


def test_unattributed_judge_violation_goes_to_review(make_pipeline: PipelineFactory, policy):
    out = JudgeOutput(violation=0.95, category=None, model="fixed")
    v = make_pipeline(judge=FixedJudge(policy, out), probes=None).classify(
        ContentItem(text=BENIGN)
    )
    assert v.status is Status.OK and v.decision is Decision.REVIEW
    assert "without naming a policy category" in v.rationale


def test_probe_only_pipeline_decides_from_probe_scores(make_pipeline: PipelineFactory):
    p = make_pipeline(judge=None)
    v = p.classify(ContentItem(text=f"hey {probe_marker('grooming')}"))
    assert not v.judged and v.decision is Decision.BLOCK
    cat = next(c for c in v.categories if c.code == "grooming")
    assert cat.source == "probe" and cat.score > 0.9
    assert v.model_versions["judge"] == "disabled"


def test_no_judge_and_no_probes_fails_closed(make_pipeline: PipelineFactory):
    v = make_pipeline(judge=None, probes=None).classify(ContentItem(text=BENIGN))
    assert v.decision is Decision.REVIEW
    assert "no model could score this item" in v.rationale


# -- hash stage -----------------------------------------------------------------------------


def test_decisive_hash_hit_blocks_and_skips_every_model(make_pipeline: PipelineFactory):
    emb = CountingEmbedder()
    hashes = FakeHashes(FakeHashCheck(matches=(bank_match(),), decisive=bank_match()))
    safety = ReferenceImageSafety(default=0.0)
    ocr = ReferenceOcr(default="text")
    p = make_pipeline(hashes=hashes, text_embedder=emb, image_safety=safety, ocr=ocr)
    v = p.classify(ContentItem(text=flagged("grooming"), image=png_bytes()))
    assert v.decision is Decision.BLOCK and v.status is Status.OK
    assert v.report is True  # sexual_minors is reportable
    assert p.judge.calls == []  # type: ignore[union-attr]
    assert emb.calls == []
    assert not v.judged
    assert v.hash_matches == (bank_match(),)
    assert v.categories[0].code == "sexual_minors" and v.categories[0].source == "hash"
    assert "known_bad" in v.rationale and "models skipped" in v.rationale
    assert {"prepare", "hash", "decide"} <= set(v.timings_ms)
    assert "signals" not in v.timings_ms and "judge" not in v.timings_ms
    assert [s.name for s in v.signals] == ["hash"]


def test_hash_hit_in_a_non_reportable_category_blocks_without_report(
    make_pipeline: PipelineFactory,
):
    m = bank_match("risky", category="endangerment")
    p = make_pipeline(hashes=FakeHashes(FakeHashCheck(matches=(m,), decisive=m)))
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.decision is Decision.BLOCK and v.report is False


def test_negative_bank_suppression_continues_the_cascade(make_pipeline: PipelineFactory):
    hit = bank_match("known_bad")
    allow = bank_match("allowlist", category=None, negative=True, distance=0)
    hashes = FakeHashes(FakeHashCheck(matches=(hit, allow), decisive=None, suppressed=(hit,)))
    p = make_pipeline(hashes=hashes, image_safety=ReferenceImageSafety(default=0.0))
    v = p.classify(ContentItem(text=flagged("sextortion"), image=png_bytes()))
    assert v.hash_matches == (hit, allow)
    assert v.judged and v.decision is Decision.BLOCK  # decided by the models, not the bank
    assert v.top_category is not None and v.top_category.source in ("judge", "probe")
    assert "suppressed by allowlist bank(s) allowlist" in v.rationale


def test_quarantined_hash_hit_goes_to_review(make_pipeline: PipelineFactory):
    hit = bank_match(quarantined=True)
    p = make_pipeline(hashes=FakeHashes(FakeHashCheck(matches=(hit,))),
                      image_safety=ReferenceImageSafety(default=0.0))
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.decision is Decision.REVIEW
    assert "quarantined" in v.rationale


def test_low_quality_pdq_is_recorded(make_pipeline: PipelineFactory):
    check = FakeHashCheck(pdq_quality=12, pdq_used=False,
                          note="PDQ quality 12 < 50: matched by exact hashes only",
                          hashes={"md5": "a" * 32, "sha256": "b" * 64, "pdq": "c" * 64})
    p = make_pipeline(hashes=FakeHashes(check), image_safety=ReferenceImageSafety(default=0.0))
    v = p.classify(ContentItem(image=png_bytes()))
    sig = next(s for s in v.signals if s.name == "hash")
    assert sig.detail["pdq_quality"] == 12 and sig.detail["pdq_used"] is False
    assert "quality 12" in str(sig.detail["note"])
    assert sig.detail["md5"] == "a" * 32
    assert v.decision is Decision.ALLOW  # nothing matched; the benign image is gated


def test_hash_stage_failure_fails_closed_and_skips_models(make_pipeline: PipelineFactory):
    emb = CountingEmbedder()
    p = make_pipeline(hashes=FakeHashes(fail=True), text_embedder=emb)
    v = p.classify(ContentItem(text=BENIGN, image=png_bytes()))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors[0].startswith("hash: stage_failed (OSError)")
    assert emb.calls == [] and p.judge.calls == []  # type: ignore[union-attr]


# -- failures: fail closed ------------------------------------------------------------------


def test_judge_error_status_gives_review(make_pipeline: PipelineFactory):
    v = make_pipeline().classify(ContentItem(text=f"{probe_marker('grooming')} cg-test:error"))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert any(e.startswith("judge:") for e in v.errors)
    assert "fail closed" in v.rationale


def test_judge_error_keeps_the_probe_scores_for_the_reviewer(make_pipeline: PipelineFactory):
    """A failed judge call still goes to review, but the verdict carries what the probes scored
    (a reviewer and the review queue's priority see it; AUPRC ranks the item by it)."""
    p = make_pipeline()
    v = p.classify(ContentItem(text=f"{probe_marker('grooming')} cg-test:error"))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    scored = {c.code: c for c in v.categories}
    assert scored["grooming"].source == "probe" and scored["grooming"].score > 0.9
    assert scored["grooming"].decision is Decision.BLOCK  # its threshold's word, not the item's
    assert all(c.source == "probe" for c in v.categories)
    assert "the signals that did run scored grooming" in v.rationale
    # a benign item whose judge failed: every category allows, the item still goes to review
    item = p.prepare(ContentItem(text=BENIGN))
    benign = p.decide(item, signals=p.signal_stage(item), judge=JudgeResult.failed("timed out"))
    assert benign.decision is Decision.REVIEW and benign.status is Status.ERROR
    assert benign.categories and all(c.decision is Decision.ALLOW for c in benign.categories)


def test_judge_exception_gives_review_without_content(make_pipeline: PipelineFactory, policy):
    text = f"{probe_marker('grooming')} secret phrase number one two three"
    v = make_pipeline(judge=RaisingJudge(policy)).classify(ContentItem(text=text))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors[0].startswith("judge: stage_failed (RuntimeError)")
    assert "secret phrase" not in v.model_dump_json()


def test_judge_timeout_gives_review(make_pipeline: PipelineFactory, policy: Policy):
    judge = SlowJudge(policy)
    p = make_pipeline(judge=judge, stage_timeout_s=0.2)
    v = p.classify(ContentItem(text=flagged("grooming")))
    judge.release.set()
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors[0].startswith("judge: timeout:")
    assert not v.judged


def test_close_does_not_pull_the_judge_from_under_a_running_call(
    make_pipeline: PipelineFactory, policy: Policy
):
    judge = SlowJudge(policy)
    p = make_pipeline(judge=judge, stage_timeout_s=0.1)
    assert p.classify(ContentItem(text=flagged("grooming"))).decision is Decision.REVIEW
    p.close(wait_s=0.05)  # the timed-out call still holds the judge
    assert not judge.closed
    judge.release.set()
    assert judge.finished.wait(5.0)
    p.close(wait_s=5.0)
    assert judge.closed


def test_embedder_exception_gives_review(make_pipeline: PipelineFactory):
    p = make_pipeline(text_embedder=RaisingEmbedder())
    text = "a message the embedder will echo back verbatim"
    v = p.classify(ContentItem(text=text))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors[0].startswith("signals: stage_failed (ValueError)")
    assert p.judge.calls == []  # type: ignore[union-attr]
    assert "echo back verbatim" not in v.model_dump_json()


def test_image_detector_error_signal_fails_closed(make_pipeline: PipelineFactory):
    p = make_pipeline(image_safety=ReferenceImageSafety(fail=True))
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert "signals: reference_image_safety failed" in v.errors
    assert p.judge.calls == []  # type: ignore[union-attr]


def test_stage_result_from_outside_timeout_fails_closed(make_pipeline: PipelineFactory):
    """Ray Serve enforces timeouts on deployment handles and reports them the same way."""
    from childguard.pipeline import JudgeResult

    p = make_pipeline()
    item = p.prepare(ContentItem(text=flagged("grooming")))
    h = p.hash_stage(item)
    s = p.signal_stage(item)
    g = p.gate(item, s)
    v = p.decide(item, hashes=h, signals=s, gate=g, judge=JudgeResult.failed("timed out"))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors == ("judge: timed out",)


# -- what the judge sees --------------------------------------------------------------------


def test_context_original_and_normalised_text_reach_the_judge(make_pipeline: PipelineFactory):
    p = make_pipeline(probes=None)
    text = "Ｋｅｅｐ this between us, ok? " + probe_marker("grooming")  # full-width letters
    ctx = (Message(author="sender", text="hi, how was school"),
           Message(author="recipient", text="fine"))
    v = p.classify(ContentItem(text=text, context=ctx))
    (seen,) = p.judge.calls  # type: ignore[union-attr]
    assert seen.text == text
    assert seen.normalized == normalize_text(text) and seen.normalized != text
    assert seen.context == ctx
    assert seen.item_id == v.item_id


def test_context_in_the_judge_changes_the_verdict(make_pipeline: PipelineFactory):
    # the marker is only in an earlier message: the judge must see the conversation
    p = make_pipeline(probes=None)
    ctx = (Message(text="earlier cg-test:grooming"),)
    v = p.classify(ContentItem(text="so, are we still on?", context=ctx))
    assert v.decision is Decision.BLOCK


def test_conversation_probe_scores_recent_context(make_pipeline: PipelineFactory):
    ctx = (Message(text=f"earlier {probe_marker('grooming')}"),)
    item = ContentItem(text="so, are we still on?", context=ctx)
    # with the conversation switched off only the message is scored: the gate lets it through
    assert not make_pipeline(probe_context_messages=0).classify(item).judged
    # the default (settings.models.probe_context_messages) scores the conversation, as the
    # probes are trained on context + message
    for p in (make_pipeline(), make_pipeline(probe_context_messages=2)):
        v = p.classify(item)
        conv = [s for s in v.signals
                if s.name == "probe.conversation" and s.category == "grooming"]
        assert conv and conv[0].score is not None and conv[0].score > 0.5
        assert v.judged  # the conversation probe kept it from the gate


def test_word_windows_cover_a_long_text_half_overlapping() -> None:
    from childguard.pipeline.prepare import word_windows

    words = [f"w{i}" for i in range(10)]
    got = word_windows(" ".join(words), 4)
    assert got[0] == "w0 w1 w2 w3" and got[-1] == "w6 w7 w8 w9"  # the end is covered
    assert all(len(w.split()) == 4 for w in got)
    assert word_windows("short text", 4) == [] and word_windows(" ".join(words), 0) == []


def test_window_probe_finds_a_marker_a_long_wrapper_dilutes(make_pipeline: PipelineFactory,
                                                           pipeline_settings):
    """With `models.probe_window_words` a short violating sentence inside a long benign
    wrapper is scored on its own window too (the highest score counts)."""
    wrapper = " ".join(["please", "read", "the", "attached", "notes", "for", "class"] * 6)
    item = ContentItem(text=f"{wrapper} {probe_marker('grooming')} {wrapper}")
    whole = make_pipeline().classify(item)
    assert not whole.judged  # diluted: the gate lets the whole text through
    windowed = pipeline_settings.model_copy(update={"models": pipeline_settings.models
                                                    .model_copy(update={"probe_window_words": 8})})
    v = make_pipeline(settings=windowed).classify(item)
    win = [s for s in v.signals if s.name == "probe.window" and s.category == "grooming"]
    assert win and max(s.score or 0.0 for s in win) > 0.5
    assert v.judged


def test_ocr_text_reaches_probes_and_judge(make_pipeline: PipelineFactory):
    image = png_bytes(3)
    p0 = make_pipeline()
    decoded = p0.prepare(ContentItem(image=image)).image
    ocr = ReferenceOcr()
    ocr.set_text(decoded, f"sign says {probe_marker('sextortion')} cg-test:sextortion")
    p = make_pipeline(ocr=ocr, image_safety=ReferenceImageSafety(default=0.0))
    v = p.classify(ContentItem(image=image))
    (seen,) = p.judge.calls  # type: ignore[union-attr]
    assert seen.ocr_text is not None and "sextortion" in seen.ocr_text
    assert seen.has_image and seen.text is None
    assert any(s.name == "probe.ocr" and s.score and s.score > 0.9 for s in v.signals)
    assert v.decision is Decision.BLOCK
    assert v.model_versions["ocr"] == "reference-ocr"


# -- images ----------------------------------------------------------------------------------


def test_benign_image_is_gated_on_image_safety_signals(make_pipeline: PipelineFactory):
    p = make_pipeline(image_safety=ReferenceImageSafety(default=0.01))
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.decision is Decision.ALLOW and not v.judged
    assert p.judge.calls == []  # type: ignore[union-attr]
    # grooming applies to text only: not scored for an image-only item
    assert "grooming" not in {c.code for c in v.categories}


def test_image_without_any_image_signal_is_judged(make_pipeline: PipelineFactory):
    p = make_pipeline()  # no image-safety source, no CLIP
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.judged


def test_strong_image_safety_signal_sends_image_to_review(make_pipeline: PipelineFactory):
    p = make_pipeline(image_safety=ReferenceImageSafety(default=0.93))
    v = p.classify(ContentItem(image=png_bytes()))
    assert v.judged  # the gate refused
    assert v.decision is Decision.REVIEW and v.status is Status.OK
    assert "reference_image_safety scored 0.93" in v.rationale


def test_clip_concepts_are_signals_but_not_probabilities_until_calibrated(
    make_pipeline: PipelineFactory,
):
    p = make_pipeline(image_embedder=ReferenceClipEmbedder(),
                      image_safety=ReferenceImageSafety(default=0.0))
    v = p.classify(ContentItem(image=png_bytes()))
    concepts = [s for s in v.signals if s.name == "clip.concept"]
    assert {s.category for s in concepts} == {"sexual_minors"}
    assert all(s.score is None and "cosine" in s.detail for s in concepts)
    assert v.model_versions["clip"].startswith("reference-clip")
    assert v.decision is Decision.ALLOW  # gated by the image-safety signal

    calibrated = make_pipeline(
        image_embedder=ReferenceClipEmbedder(), image_safety=ReferenceImageSafety(default=0.0),
        concept_calibrator=lambda code, cos: 0.95,
    )
    v2 = calibrated.classify(ContentItem(image=png_bytes()))
    assert v2.judged  # the calibrated concept score is above the gate
    assert any(s.name == "clip.concept" and s.score == 0.95 for s in v2.signals)


# -- pluggable strategies ---------------------------------------------------------------------


def test_score_combiner_is_pluggable(make_pipeline: PipelineFactory):
    from childguard.pipeline import Combination, CombinedScore, ScoreCombiner

    class MaxCombiner(ScoreCombiner):
        name = "max"

        def combine(self, policy, codes, *, probe_scores, judge, signals, item):
            js = judge.category_scores if judge is not None else {}
            return Combination({
                c: CombinedScore(max(probe_scores.get(c, 0.0), js.get(c, 0.0)), "combined",
                                 "max of probe and judge")
                for c in codes
            })

    # probe fires on grooming, the judge sees nothing: judge_first trusts the judge
    from childguard.pipeline import JudgeFirstCombiner

    text = f"hey {probe_marker('grooming')}"
    assert make_pipeline(combiner=JudgeFirstCombiner()).classify(
        ContentItem(text=text)).decision is Decision.ALLOW
    v = make_pipeline(combiner=MaxCombiner()).classify(ContentItem(text=text))
    assert v.decision is Decision.BLOCK
    cat = next(c for c in v.categories if c.code == "grooming")
    assert cat.source == "combined" and cat.rationale == "max of probe and judge"


def test_gate_policy_is_pluggable(make_pipeline: PipelineFactory):
    from childguard.pipeline import GatePolicy, GateResult

    class NeverGate(GatePolicy):
        name = "never"

        def evaluate(self, policy, item, signals, *, probes_loaded):
            return GateResult(reason="always judge")

    v = make_pipeline(gate_policy=NeverGate()).classify(ContentItem(text=BENIGN))
    assert v.judged


def test_gate_exception_fails_closed(make_pipeline: PipelineFactory):
    from childguard.pipeline import GatePolicy

    class BrokenGate(GatePolicy):
        name = "broken"

        def evaluate(self, policy, item, signals, *, probes_loaded):
            raise ZeroDivisionError("boom")

    p = make_pipeline(gate_policy=BrokenGate())
    v = p.classify(ContentItem(text=BENIGN))
    assert v.status is Status.ERROR and v.decision is Decision.REVIEW
    assert v.errors[0].startswith("gate: stage_failed (ZeroDivisionError)")
    assert p.judge.calls == []  # type: ignore[union-attr]


# -- stages one by one = classify --------------------------------------------------------------


def test_stage_by_stage_gives_the_same_verdict_as_classify(make_pipeline: PipelineFactory):
    p = make_pipeline(image_safety=ReferenceImageSafety(default=0.0),
                      hashes=FakeHashes(FakeHashCheck()))
    item = ContentItem(id="same", text=flagged("grooming"), image=png_bytes())
    whole = p.classify(item)
    prepared = p.prepare(item)
    h = p.hash_stage(prepared)
    s = p.signal_stage(prepared)
    g = p.gate(prepared, s)
    j = p.judge_stage(prepared, s)
    staged = p.decide(prepared, hashes=h, signals=s, gate=g, judge=j)
    skip = {"created_at", "timings_ms", "signals"}
    assert staged.model_dump(exclude=skip) == whole.model_dump(exclude=skip)
    assert [x.name for x in staged.signals] == [x.name for x in whole.signals]


def test_classify_batch_batches_embedder_and_judge(make_pipeline: PipelineFactory, policy):
    emb = CountingEmbedder()
    judge = RecordingJudge(policy)
    hit = bank_match()
    hashes = FakeHashes(FakeHashCheck(matches=(hit,), decisive=hit))
    p = make_pipeline(text_embedder=emb, judge=judge, hashes=hashes)
    items = [
        ContentItem(id="a", text=BENIGN),
        ContentItem(id="b", text=flagged("grooming")),
        ContentItem(id="c", image=png_bytes()),  # hash hit
        ContentItem(id="d", text=flagged("sextortion")),
        ContentItem(id="e", text=f"{probe_marker('grooming')} cg-test:error"),
    ]
    vs = p.classify_batch(items)
    assert [v.item_id for v in vs] == ["a", "b", "c", "d", "e"]
    assert [v.decision for v in vs] == [Decision.ALLOW, Decision.BLOCK, Decision.BLOCK,
                                        Decision.BLOCK, Decision.REVIEW]
    assert vs[4].status is Status.ERROR
    assert emb.calls == [4]  # one embedder call for the four texts (the hash hit skipped)
    assert judge.batches == [3]  # one judge batch for b, d, e
    assert [v.judged for v in vs] == [False, True, False, True, False]


def test_pipeline_logs_no_raw_content(make_pipeline: PipelineFactory, policy, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "unique-content-token-4711 alpha beta gamma"
    quoting = FixedJudge(policy, JudgeOutput(violation=0.2, category_scores={"grooming": 0.2},
                                             rationale="the message says '{text}'", model="q"))
    items = [
        (make_pipeline(), ContentItem(text=secret)),
        (make_pipeline(probes=None, judge=quoting), ContentItem(text=secret)),
        (make_pipeline(text_embedder=RaisingEmbedder()), ContentItem(text=secret)),
        (make_pipeline(judge=RaisingJudge(policy), probes=None), ContentItem(text=secret)),
        (make_pipeline(probes=None), ContentItem(text=f"{secret} cg-test:error",
                                                 context=(Message(text=secret),))),
    ]
    for p, item in items:
        v = p.classify(item)
        assert "4711" not in v.model_dump_json()
        assert "alpha beta" not in v.model_dump_json()
    assert "4711" not in caplog.text
    assert "classified item=" in caplog.text  # the pipeline does log, with ids
    # the quoting judge's rationale was redacted, not dropped
    v = make_pipeline(probes=None, judge=quoting).classify(ContentItem(text=secret))
    assert "the message says '[content removed]'" in v.rationale


def _with_combine(policy: Policy, combine: str) -> Policy:
    judge = policy.spec.judge.model_copy(update={"combine": combine})
    return dataclasses.replace(policy, spec=policy.spec.model_copy(update={"judge": judge}))


def test_policy_combine_setting_picks_the_combiner(make_pipeline: PipelineFactory, policy):
    # the probe fires on grooming, the reference judge sees no marker and says no
    text = f"hey {probe_marker('grooming')}"
    first = make_pipeline(policy=_with_combine(policy, "judge_first")).classify(
        ContentItem(text=text))
    assert first.judged and first.decision is Decision.ALLOW
    v = make_pipeline(policy=_with_combine(policy, "max")).classify(ContentItem(text=text))
    assert v.judged and v.decision is Decision.BLOCK
    cat = next(c for c in v.categories if c.code == "grooming")
    assert cat.source == "probe" and cat.score > 0.9
    assert "grooming" in v.rationale and "(probe," in v.rationale
    # both models' own scores stay visible in the verdict's signals
    judge_sigs = {s.category: s.score for s in v.signals if s.name == "judge"}
    assert set(judge_sigs) == set(policy.spec.codes)
    assert judge_sigs["grooming"] is not None and judge_sigs["grooming"] < 0.3


def test_max_combiner_keeps_the_judge_when_it_is_higher(make_pipeline: PipelineFactory, policy):
    # the judge flags sextortion, no probe fires (the gate sends the item on because the
    # policy's gate is off here): the judge's score stands
    scores = dict.fromkeys(policy.spec.codes, 0.01) | {"sextortion": 0.95}
    judge = FixedJudge(policy, JudgeOutput(violation=0.95, category="sextortion",
                                           category_scores=scores, model="fixed"))
    pol = _with_combine(policy, "max")
    pol = dataclasses.replace(pol, spec=pol.spec.model_copy(update={
        "gate": pol.spec.gate.model_copy(update={"enabled": False})}))
    v = make_pipeline(policy=pol, judge=judge).classify(ContentItem(text=BENIGN))
    cat = next(c for c in v.categories if c.code == "sextortion")
    assert cat.source == "judge" and cat.score == pytest.approx(0.95)
    assert v.decision is Decision.BLOCK


def test_gate_above_a_review_threshold_lets_the_probe_flag_without_the_judge(
        make_pipeline: PipelineFactory, policy):
    # a gate bar above the review thresholds: the judge is skipped, the probe score decides
    pol = dataclasses.replace(policy, spec=policy.spec.model_copy(update={
        "gate": policy.spec.gate.model_copy(update={"allow_below": 1.0})}))
    p = make_pipeline(policy=pol)
    v = p.classify(ContentItem(text=f"hey {probe_marker('grooming')}"))
    assert not v.judged and not p.judge.calls  # type: ignore[union-attr]
    assert v.decision is Decision.BLOCK
    assert "judge not called" in v.rationale and "allowed by" not in v.rationale
    benign = p.classify(ContentItem(text=BENIGN))
    assert benign.decision is Decision.ALLOW and "allowed by the cheap-signal gate" in \
        benign.rationale


def test_stacked_combiner_lets_the_judge_lower_a_probe_score(make_pipeline: PipelineFactory,
                                                             policy):
    # the probe fires on grooming; the judge says no. With `max` the probe's score stands; a
    # stacker that trusts the judge pulls the score down below the review threshold
    from childguard.policy import StackWeights

    text = f"hey {probe_marker('grooming')}"
    judge_cfg = policy.spec.judge.model_copy(update={
        "combine": "stacked",
        "stacker": {"grooming": StackWeights(bias=-1.0, probe=0.3, judge=1.5)}})
    pol = dataclasses.replace(policy, spec=policy.spec.model_copy(update={"judge": judge_cfg}))
    v = make_pipeline(policy=pol).classify(ContentItem(text=text))
    cat = next(c for c in v.categories if c.code == "grooming")
    assert v.judged and cat.source == "stacked"
    assert cat.score < policy.thresholds()["grooming"].review
    assert v.decision is Decision.ALLOW
    # a category without weights keeps max; a judge "yes" raises the stacked score
    scores = dict.fromkeys(policy.spec.codes, 0.01) | {"grooming": 0.97}
    yes = FixedJudge(pol, JudgeOutput(violation=0.97, category="grooming",
                                      category_scores=scores, model="fixed"))
    v2 = make_pipeline(policy=pol, judge=yes).classify(ContentItem(text=text))
    assert next(c for c in v2.categories if c.code == "grooming").score > 0.9
    assert v2.decision is not Decision.ALLOW
