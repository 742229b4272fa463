"""The Label Studio labelling config, generated from the policy, and the translation of our
verdicts to Label Studio predictions and of annotations back to our outcomes.

Why generated: the categories, their definitions and what does and does not violate come from
`policy.yaml`, so reviewers always see the wording the model was judged against, and a policy
change is one `childguard review init` away.

Reviewer wellness is the default, not an option: images are blurred and greyscale; the reviewer
reveals one deliberately by holding the pointer on it for a moment (a CSS rule with a delay, so a
pointer passing over it reveals nothing), and it goes back when the pointer leaves. Nothing plays
by itself: the config has no audio or video tags, and any media element is kept paused-looking
and muted by the same style sheet.

The translation lives here (the boundary), so the rest of the code speaks `Verdict` and
`ReviewOutcome` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from childguard.errors import UserError
from childguard.policy import Policy
from childguard.schema import Decision, ReviewOutcome, Verdict

#: Label Studio predictions are shown as pre-annotations when their model_version matches
#: the project's; one stable name keeps that true across model upgrades.
MODEL_VERSION = "childguard"

DECISION_FIELD = "decision"
CATEGORIES_FIELD = "categories"
COMMENT_FIELD = "comment"
SUGGESTION_FIELD = "model_suggestion"

#: choice value shown to the reviewer -> our outcome
DECISION_CHOICES: dict[str, ReviewOutcome] = {
    "allow": ReviewOutcome.ALLOW,
    "block": ReviewOutcome.BLOCK,
    "escalate-and-report": ReviewOutcome.ESCALATE,
}
_DECISION_HINTS = {
    "allow": "Not a violation: the item is allowed.",
    "block": "A violation: the item is removed.",
    "escalate-and-report": "A violation that must be reported (e.g. to NCMEC): block and report.",
}

#: the wellness style sheet; `.cg-media` wraps the image
WELLNESS_CSS = """
.cg-media img, .cg-media canvas {
  filter: blur(28px) grayscale(100%);
  transition: filter 0.15s ease-out 0s;
}
.cg-media:hover img, .cg-media:hover canvas {
  filter: none;
  transition: filter 0.3s ease-in 1.2s;
}
.cg-media::before {
  content: "Image hidden for your wellbeing: rest the pointer on it for a moment to reveal it.";
  display: block; font-size: 12px; color: #555; margin-bottom: 4px;
}
.cg-media audio, .cg-media video { display: none; }
.cg-policy { font-size: 12px; max-height: 80vh; overflow-y: auto; }
.cg-suggestion { background: #f4f6fb; border-left: 3px solid #5b7bd5; padding: 6px 8px; }
"""


def _a(value: str) -> str:
    return quoteattr(value)


def _policy_panel(policy: Policy) -> list[str]:
    spec = policy.spec
    lines = [
        '  <View className="cg-policy" style="flex: 1; min-width: 280px; padding-left: 12px">',
        f"    <Header value={_a(f'Policy: {spec.title} (version {policy.version})')} size=\"5\"/>",
        f"    <Header value={_a(spec.summary.strip())} size=\"6\"/>",
    ]
    for cat in spec.categories:
        lines.append(f"    <Header value={_a(f'{cat.code}: {cat.name}')} size=\"5\"/>")
        lines.append(f"    <Header value={_a(cat.definition.strip())} size=\"6\"/>")
        lines.append(
            f"    <Header value={_a('Violates: ' + '; '.join(cat.violates))} size=\"6\"/>"
        )
        lines.append(
            f"    <Header value={_a('Does not violate: ' + '; '.join(cat.does_not_violate))} "
            'size="6"/>'
        )
    if spec.does_not_violate_general:
        lines.append(
            "    <Header value="
            + _a("Never a violation: " + "; ".join(spec.does_not_violate_general))
            + ' size="6"/>'
        )
    lines.append("  </View>")
    return lines


def label_config(policy: Policy) -> str:
    """The labelling config XML for `policy`."""
    decision_choices = "\n".join(
        f"      <Choice value={_a(v)} hint={_a(_DECISION_HINTS[v])}/>" for v in DECISION_CHOICES
    )
    category_choices = "\n".join(
        f"      <Choice value={_a(c.code)} hint={_a(c.name)}/>" for c in policy.spec.categories
    )
    parts = [
        "<View>",
        f"  <Style>{WELLNESS_CSS}</Style>",
        '  <View style="display: flex; align-items: flex-start">',
        '  <View style="flex: 2; min-width: 360px">',
        '    <Header value="Item" size="4"/>',
        '    <Text name="text" value="$text" granularity="word"/>',
        '    <Header value="Conversation before (oldest first)" size="6"/>',
        '    <Text name="context" value="$context"/>',
        '    <View className="cg-media">',
        '      <Image name="image" value="$image" zoom="true" zoomControl="true"/>',
        "    </View>",
        '    <View className="cg-suggestion">',
        '      <Header value="Model suggestion" size="5"/>',
        '      <Text name="model" value="$model_summary"/>',
        f'      <TextArea name="{SUGGESTION_FIELD}" toName="text" editable="false" '
        'rows="3" maxSubmissions="1"/>',
        "    </View>",
        '    <Header value="Your decision" size="4"/>',
        f'    <Choices name="{DECISION_FIELD}" toName="text" choice="single-radio" '
        'required="true" showInline="true">',
        decision_choices,
        "    </Choices>",
        '    <Header value="Categories that apply" size="5"/>',
        f'    <Choices name="{CATEGORIES_FIELD}" toName="text" choice="multiple" '
        'showInline="true">',
        category_choices,
        "    </Choices>",
        '    <Header value="Comment (optional; no content, describe the reason)" size="6"/>',
        f'    <TextArea name="{COMMENT_FIELD}" toName="text" rows="2" maxSubmissions="1"/>',
        "  </View>",
        *_policy_panel(policy),
        "  </View>",
        "</View>",
    ]
    return "\n".join(parts) + "\n"


# -- verdict -> prediction ----------------------------------------------------------------


def suggested_outcome(verdict: Verdict, policy: Policy) -> ReviewOutcome:
    """The model's leaning for an item it sent to review.

    Block when the top category is at least halfway from its review to its block threshold,
    escalate when that category is one that must be reported; otherwise allow. Error verdicts
    (no scores) suggest block: the item is unknown, and fail closed applies to suggestions too.
    """
    top = verdict.top_category
    if top is None:
        allowed = verdict.decision is Decision.ALLOW
        return ReviewOutcome.ALLOW if allowed else ReviewOutcome.BLOCK
    try:
        cat = policy.spec.category(top.code)
    except KeyError:
        return ReviewOutcome.BLOCK
    mid = (cat.thresholds.review + cat.thresholds.block) / 2
    if top.score < mid and top.decision is not Decision.BLOCK:
        return ReviewOutcome.ALLOW
    return ReviewOutcome.ESCALATE if (cat.report or verdict.report) else ReviewOutcome.BLOCK


def outcome_choice(outcome: ReviewOutcome) -> str:
    for value, o in DECISION_CHOICES.items():
        if o is outcome:
            return value
    raise AssertionError(outcome)  # pragma: no cover - the map covers the enum


def model_summary(verdict: Verdict) -> str:
    """One short, content-free line block: scores, decision, rationale."""
    scores = ", ".join(
        f"{c.code} {c.score:.2f}" for c in sorted(verdict.categories, key=lambda c: -c.score)
    )
    lines = [
        f"Model decision: {verdict.decision.value} (status {verdict.status.value})",
        f"Scores: {scores or 'none'}",
    ]
    if verdict.hash_matches:
        lines.append("Hash matches: " + ", ".join(sorted({m.bank for m in verdict.hash_matches})))
    for m in verdict.hash_matches:
        if m.video is not None:  # a video hit held back (quarantined / allowlisted): where
            segs = ", ".join(f"{g.query_start:.0f}-{g.query_end:.0f} s"
                             for g in m.video.segments[:5])
            lines.append(f"Video match in {m.bank}: {m.video.query_match_pct:.0f}% / "
                         f"{m.video.target_match_pct:.0f}% of frames; segments {segs or 'none'}")
    at = {id(s): t for s in verdict.signals
          if isinstance(t := s.detail.get("frame_s"), int | float)}
    if at:
        # the sheet's tiles are labelled with these times
        top = sorted((s for s in verdict.signals if s.score is not None and id(s) in at),
                     key=lambda s: -(s.score or 0.0))[:3]
        lines.append(f"Video keyframes at {', '.join(f'{t:.1f}' for t in sorted(set(at.values())))}"
                     " s; highest: " + (", ".join(f"{s.name} {s.score or 0.0:.2f} at "
                                                  f"{at[id(s)]:.1f} s" for s in top) or "none"))
    rules = [s for s in verdict.signals if s.name.startswith("rule.")]
    if rules:
        # the policy authors' rules that fired, by id (never the matched words)
        lines.append("Policy rules: " + ", ".join(
            f"{s.name.removeprefix('rule.')} ({s.category or 'no category'}, floor "
            f"{s.detail.get('floor', '?')})" for s in rules))
    if verdict.rationale:
        lines.append(f"Rationale: {verdict.rationale}")
    if verdict.errors:
        lines.append("Errors: " + "; ".join(verdict.errors))
    return "\n".join(lines)


def _choices_result(name: str, values: Sequence[str], to_name: str = "text") -> dict[str, Any]:
    return {
        "from_name": name, "to_name": to_name, "type": "choices", "origin": "prediction",
        "value": {"choices": list(values)},
    }  # fmt: skip


def prediction(verdict: Verdict, policy: Policy) -> dict[str, Any]:
    """The verdict as a Label Studio prediction (shown as the pre-annotation)."""
    suggestion = suggested_outcome(verdict, policy)
    flagged = [c.code for c in verdict.categories if c.decision is not Decision.ALLOW]
    if not flagged and suggestion is not ReviewOutcome.ALLOW and verdict.top_category:
        flagged = [verdict.top_category.code]
    result: list[dict[str, Any]] = [_choices_result(DECISION_FIELD, [outcome_choice(suggestion)])]
    if flagged:
        result.append(_choices_result(CATEGORIES_FIELD, flagged))
    result.append({
        "from_name": SUGGESTION_FIELD, "to_name": "text", "type": "textarea",
        "origin": "prediction", "value": {"text": [model_summary(verdict)]},
    })  # fmt: skip
    top = verdict.top_category
    return {"model_version": MODEL_VERSION, "score": top.score if top else 0.0, "result": result}


# -- annotation -> outcome ----------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAnnotation:
    outcome: ReviewOutcome
    categories: tuple[str, ...]
    comment: str


def parse_annotation(result: Iterable[dict[str, Any]], policy: Policy) -> ParsedAnnotation:
    """An annotation's `result` list -> outcome, categories, comment. UserError if no decision."""
    outcome: ReviewOutcome | None = None
    categories: list[str] = []
    comment_parts: list[str] = []
    known = set(policy.spec.codes)
    for r in result:
        name = r.get("from_name")
        value = r.get("value") or {}
        if name == DECISION_FIELD:
            for choice in value.get("choices", []):
                mapped = DECISION_CHOICES.get(str(choice).strip().lower())
                if mapped is None:
                    try:
                        mapped = ReviewOutcome(str(choice).strip().lower())
                    except ValueError:
                        continue
                outcome = mapped
        elif name == CATEGORIES_FIELD:
            categories.extend(str(c) for c in value.get("choices", []) if str(c) in known)
        elif name == COMMENT_FIELD:
            comment_parts.extend(str(t) for t in value.get("text", []))
    if outcome is None:
        raise UserError(
            f"annotation has no '{DECISION_FIELD}' choice; expected one of "
            f"{', '.join(DECISION_CHOICES)}"
        )
    return ParsedAnnotation(
        outcome=outcome,
        categories=tuple(dict.fromkeys(categories)),
        comment="\n".join(comment_parts).strip(),
    )


def annotation_result(outcome: ReviewOutcome, categories: Sequence[str] = (), comment: str = ""
                      ) -> list[dict[str, Any]]:
    """A reviewer's annotation `result` (what the Label Studio UI submits); used by tests."""
    res: list[dict[str, Any]] = [
        {"from_name": DECISION_FIELD, "to_name": "text", "type": "choices",
         "value": {"choices": [outcome_choice(outcome)]}},
    ]  # fmt: skip
    if categories:
        res.append({"from_name": CATEGORIES_FIELD, "to_name": "text", "type": "choices",
                    "value": {"choices": list(categories)}})  # fmt: skip
    if comment:
        res.append({"from_name": COMMENT_FIELD, "to_name": "text", "type": "textarea",
                    "value": {"text": [comment]}})  # fmt: skip
    return res
