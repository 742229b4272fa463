"""Decide: stage outputs and the policy in, the `Verdict` out; no model runs here.

Why a class of its own: both hosts end every item here, so what a verdict says (decision,
categories, rationale, versions, errors) cannot depend on the host. Order of precedence: a
decisive hash hit blocks; any failed stage sends the item to review (fail closed) with the
scores that did run; otherwise the combiner's scores meet the policy's thresholds and the
rules' floors, and escalations (an unattributed judge violation, a strong uncategorised image
signal, a quarantined hash hit, an item no model could score) raise allow to review.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from childguard.pipeline.redaction import describe_exception
from childguard.pipeline.results import (
    STAGES,
    GateResult,
    HashResult,
    JudgeResult,
    PreparedItem,
    SignalResult,
    log_failure,
    ms_since,
    redactor_for,
)
from childguard.pipeline.strategies import Combination, ScoreCombiner, clip01
from childguard.policy import Policy
from childguard.rules import FLOOR_RANK, RuleHit
from childguard.schema import CategoryScore, Decision, Signal, Status, Verdict

__all__ = ["DECISION_RANK", "Decider"]

log = logging.getLogger("childguard.pipeline")

DECISION_RANK = {Decision.ALLOW: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}


def _max_decision(*decisions: Decision) -> Decision:
    return max(decisions, key=DECISION_RANK.__getitem__, default=Decision.ALLOW)


def _worst_first(c: CategoryScore) -> tuple[int, float]:
    """Sort key for a rationale: block before review before allow, then the higher score."""
    return (-DECISION_RANK[c.decision], -c.score)


def _threshold_phrase(score: float, decision: Decision, review: float, block: float) -> str:
    if decision is Decision.BLOCK:
        return f">= block threshold {block:g}"
    if decision is Decision.REVIEW:
        return f">= review threshold {review:g}"
    return f"< review threshold {review:g}"


@dataclass(frozen=True)
class Decider:
    """The decision rules of one policy with one combiner. `unavailable` names the models
    that are missing or disabled (every verdict's `model_versions` carries them)."""

    policy: Policy
    combiner: ScoreCombiner
    unavailable: Mapping[str, str]

    def decide(
        self,
        item: PreparedItem,
        *,
        hashes: HashResult | None = None,
        signals: SignalResult | None = None,
        gate: GateResult | None = None,
        judge: JudgeResult | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> Verdict:
        """Turn the stage results into the verdict. Any failed stage gives review."""
        t0 = time.perf_counter()
        try:
            verdict = self._decide(item, hashes, signals, gate, judge, dict(timings or {}))
        except Exception as exc:
            error = describe_exception(exc, redactor_for(item, signals))
            log_failure("decide", item, error, exc)
            verdict = self._verdict(
                item, Decision.REVIEW, status=Status.ERROR,
                rationale="stage 'decide' failed; sent to human review (fail closed)",
                errors=(f"decide: {error}",), hashes=hashes, signals=signals, judge=judge,
                timings=dict(timings or {}),
            )
        timings_out = dict(verdict.timings_ms)
        timings_out["decide"] = ms_since(t0)
        timings_out.setdefault("total", round(sum(
            v for k, v in timings_out.items() if k in STAGES
        ), 3))
        verdict = verdict.model_copy(update={"timings_ms": timings_out})
        log.info(
            "classified item=%s decision=%s status=%s judged=%s report=%s",
            verdict.item_id, verdict.decision.value, verdict.status.value, verdict.judged,
            verdict.report,
        )
        return verdict

    def _decide(
        self,
        item: PreparedItem,
        hashes: HashResult | None,
        signals: SignalResult | None,
        gate: GateResult | None,
        judge: JudgeResult | None,
        timings: dict[str, float],
    ) -> Verdict:
        # 1. a decisive hash hit blocks; the models were skipped
        if hashes is not None and hashes.ok and hashes.decisive is not None:
            return self._hash_verdict(item, hashes, timings)

        # 2. any failed stage: fail closed
        errors = tuple(
            f"{r.stage}: {r.error or 'failed'}"
            for r in (hashes, signals, gate, judge)
            if r is not None and r.status is Status.ERROR
        )
        if signals is not None and signals.ok:
            # a detector that reports its own failure: the item is not known to be safe
            errors += tuple(f"signals: {name} failed" for name in signals.failed_signals)
        if errors:
            return self._error_verdict(item, errors, hashes, signals, judge, timings)

        codes = self._applicable_codes(item, signals)
        probe_scores = signals.probe_scores if signals is not None else {}
        gated = gate is not None and gate.ok and gate.allowed
        judged = judge is not None and judge.ok and judge.output is not None
        judge_out = judge.output if judged and judge is not None else None
        combo = self.combiner.combine(
            self.policy, codes,
            probe_scores=probe_scores,
            judge=judge_out,
            signals=signals.signals if signals is not None else (),
            item=item,
        )
        hits = signals.rule_hits if signals is not None else ()
        categories = self._floored(self._category_scores(codes, combo), hits)
        decision = _max_decision(*(c.decision for c in categories))
        notes: list[str] = []
        escalations = list(combo.escalations)
        if hashes is not None:
            quarantined = [m for m in hashes.matches if m.quarantined and not m.negative]
            if quarantined:
                escalations.append(
                    f"hash match in bank '{quarantined[0].bank}' is held back (quarantined)"
                )
            if hashes.suppressed:
                allow_banks = sorted({m.bank for m in hashes.matches if m.negative})
                notes.append(
                    f"hash hit in bank(s) {', '.join(sorted({m.bank for m in hashes.suppressed}))}"
                    f" suppressed by allowlist bank(s) {', '.join(allow_banks) or '?'}"
                )
        if not judged and not gated:
            # neither the judge nor the gate settled it: the probes alone may not allow
            covered = signals is not None and (
                (not item.has_text or signals.text_covered)
                and (not item.has_image or signals.image_covered)
            )
            if not covered or not categories:
                escalations.append("no model could score this item")
        if escalations and DECISION_RANK[decision] < DECISION_RANK[Decision.REVIEW]:
            decision = Decision.REVIEW
        report = any(
            c.decision is Decision.BLOCK and self.policy.spec.category(c.code).report
            for c in categories
        )
        # rationale a reviewer can read
        parts: list[str] = []
        flagged = sorted(
            (c for c in categories if c.decision is not Decision.ALLOW),
            key=_worst_first,
        )
        if gated and gate is not None and not flagged:
            parts.append(f"allowed by the cheap-signal gate: {gate.reason}; judge not called")
        elif flagged:
            parts.append(f"{decision.value}: " + "; ".join(
                f"{c.code} {c.score:.2f} ({c.source}, {c.rationale})" for c in flagged
            ))
        else:
            top = max(categories, key=lambda c: c.score, default=None)
            parts.append(
                f"{decision.value}: no category reached its review threshold"
                + (f" (highest {top.code} {top.score:.2f}, {top.source})" if top else "")
            )
        if gated and gate is not None and flagged:
            # the gate's bar (skip the judge) sits above a category's review threshold: the
            # probe score alone flags the item, without a judge call
            parts.append(f"judge not called (cheap-signal gate: {gate.reason})")
        if escalations:
            parts.append("sent to review: " + "; ".join(escalations))
        if judge_out is not None and judge_out.rationale:
            parts.append(f"judge: {judge_out.rationale}")
        if gate is not None and not gate.allowed and gate.reason:
            parts.append(f"not settled by the gate: {gate.reason}")
        if hits:
            parts.append("policy rules: " + "; ".join(f"{h.label()}: {h.why}" for h in hits))
        if report:
            parts.append("reportable category blocked: a report is due after human confirmation")
        parts.extend(notes)
        return self._verdict(
            item, decision, status=Status.OK, rationale=". ".join(parts), categories=categories,
            report=report, judged=judged, hashes=hashes, signals=signals, judge=judge,
            timings=timings,
        )

    def _category_scores(self, codes: Sequence[str], combo: Combination) -> list[CategoryScore]:
        """One `CategoryScore` per applicable code the combiner scored, decided by the policy's
        thresholds."""
        thresholds = self.policy.thresholds()
        categories: list[CategoryScore] = []
        for code in codes:
            if code not in combo.scores:
                continue
            cs = combo.scores[code]
            th = thresholds[code]
            decision = th.decide(cs.score)
            why = cs.rationale or _threshold_phrase(cs.score, decision, th.review, th.block)
            categories.append(CategoryScore(
                code=code, score=round(cs.score, 6), decision=decision, rationale=why,
                source=cs.source,
            ))
        return categories

    def _floored(self, categories: list[CategoryScore],
                 hits: Sequence[RuleHit]) -> list[CategoryScore]:
        """Categories raised to the floors of the rules that fired (`rules.py`): a `review`
        floor puts the score at least at the category's review threshold, `block` at its block
        threshold; a `judge` floor only kept the item from the gate. The models (judge
        included) can raise a category above a floor, never lower it below one."""
        floors: dict[str, RuleHit] = {}
        for h in hits:
            if h.floor == "judge" or h.category is None \
                    or h.category not in self.policy.spec.codes:
                continue
            have = floors.get(h.category)
            if have is None or FLOOR_RANK[h.floor] > FLOOR_RANK[have.floor]:
                floors[h.category] = h
        if not floors:
            return categories
        thresholds = self.policy.thresholds()
        scored = {c.code for c in categories}
        unscored = [CategoryScore(code=code, score=0.0, decision=Decision.ALLOW, source="rule")
                    for code in floors if code not in scored]
        out: list[CategoryScore] = []
        for c in [*categories, *unscored]:
            hit = floors.get(c.code)
            th = thresholds[c.code]
            bar = th.block if hit is not None and hit.floor == "block" else th.review
            if hit is None or c.score >= bar:
                out.append(c)
                continue
            out.append(CategoryScore(
                code=c.code, score=round(bar, 6), decision=th.decide(bar), source="rule",
                rationale=f"rule {hit.rule} sets at least {hit.floor} (model score "
                          f"{c.score:.2f})",
            ))
        return out

    def _error_verdict(
        self,
        item: PreparedItem,
        errors: tuple[str, ...],
        hashes: HashResult | None,
        signals: SignalResult | None,
        judge: JudgeResult | None,
        timings: dict[str, float],
    ) -> Verdict:
        """A failed stage: review (fail closed), with what the cheap signals scored.

        Why keep the scores: a reviewer deciding an item whose judge failed should see that the
        probes scored it 0.86 for sexual_minors, and the review queue and the evaluation rank
        it by that score (measured: a long positive whose judge call failed had no scores, so it
        ranked below every benign item in AUPRC). The scores do not change the decision: the
        item goes to review whatever they say (only review decisions reach the review queue, so
        not even a category at its block threshold blocks without a human); each category keeps
        the decision its threshold gives, for the reviewer and the per-category metrics."""
        failed = ", ".join(e.split(":", 1)[0] for e in errors)
        rationale = f"stage '{failed}' failed; sent to human review (fail closed)"
        categories: list[CategoryScore] = []
        if signals is not None and signals.ok and signals.probe_scores:
            codes = self._applicable_codes(item, signals)
            combo = self.combiner.combine(
                self.policy, codes, probe_scores=signals.probe_scores, judge=None,
                signals=signals.signals, item=item,
            )
            categories = self._category_scores(codes, combo)
        if signals is not None and signals.ok:
            categories = self._floored(categories, signals.rule_hits)
        if categories:
            top = sorted(categories, key=_worst_first)[:3]
            rationale += "; the signals that did run scored " + "; ".join(
                f"{c.code} {c.score:.2f} ({c.source}, {c.decision.value})" for c in top)
        return self._verdict(
            item, Decision.REVIEW, status=Status.ERROR, rationale=rationale,
            categories=categories, errors=errors, hashes=hashes, signals=signals, judge=judge,
            timings=timings,
        )

    def _hash_verdict(
        self, item: PreparedItem, hashes: HashResult, timings: dict[str, float]
    ) -> Verdict:
        m = hashes.decisive
        assert m is not None
        code = m.category
        report = False
        known = code is not None and code in self.policy.spec.codes
        if known and code is not None:
            report = self.policy.spec.category(code).report
        if m.video is not None:
            segs = ", ".join(f"{g.query_start:.0f}-{g.query_end:.0f} s ~ bank "
                             f"{g.target_start:.0f}-{g.target_end:.0f} s"
                             for g in m.video.segments[:5])
            where = (f"bank '{m.bank}' (vpdq, {m.video.query_match_pct:.0f}% of the video's "
                     f"frames / {m.video.target_match_pct:.0f}% of the bank video's, entry "
                     f"{m.entry_id}; segments {segs or 'none'})")
            rationale = f"block: the video matched {where}"
        else:
            where = (f"bank '{m.bank}' ({m.signal_type}, distance {m.distance}, entry "
                     f"{m.entry_id})")
            media = "video" if item.video is not None else "image"
            rationale = f"block: the {media} matched hash {where}"
        if code:
            rationale += f"; category {code}" + (" (reportable)" if report else "")
            if not known:
                rationale += f" (not a category of policy {self.policy.id})"
        rationale += "; models skipped"
        categories = []
        if code:
            categories.append(CategoryScore(
                code=code, score=1.0, decision=Decision.BLOCK, source="hash",
                rationale=f"matched {where}",
            ))
        return self._verdict(
            item, Decision.BLOCK, status=Status.OK, rationale=rationale, categories=categories,
            report=report, hashes=hashes, timings=timings,
        )

    def _applicable_codes(self, item: PreparedItem, signals: SignalResult | None) -> list[str]:
        kinds = set()
        if item.has_text or (signals is not None and signals.ocr_text):
            kinds.add("text")
        if item.has_image:
            kinds.add("image")
        return [c.code for c in self.policy.spec.categories if kinds & set(c.applies_to)]

    def _verdict(
        self,
        item: PreparedItem,
        decision: Decision,
        *,
        status: Status,
        rationale: str,
        categories: Sequence[CategoryScore] = (),
        report: bool = False,
        judged: bool = False,
        errors: tuple[str, ...] = (),
        hashes: HashResult | None = None,
        signals: SignalResult | None = None,
        judge: JudgeResult | None = None,
        timings: dict[str, float],
    ) -> Verdict:
        sig: list[Signal] = []
        if hashes is not None and (hs := hashes.signal()) is not None:
            sig.append(hs)
        if signals is not None:
            sig.extend(signals.signals)
        versions = dict(self.unavailable)
        for r in (hashes, signals, judge):
            if r is not None:
                versions.update(r.versions)
        if judged and judge is not None and judge.output is not None:
            out = judge.output
            if out.model:
                versions["judge"] = out.model
            # the judge's own per-category scores, whatever the combiner made of them, so a
            # reviewer (and `eval calibrate`) sees both models' opinions side by side
            sig.extend(
                Signal(name="judge", category=code, score=clip01(score), model=out.model or None,
                       elapsed_ms=round(judge.elapsed_ms, 3))
                for code, score in sorted(out.category_scores.items())
            )
        return Verdict(
            item_id=item.item_id,
            decision=decision,
            status=status,
            categories=tuple(categories),
            signals=tuple(sig),
            hash_matches=hashes.matches if hashes is not None else (),
            rationale=rationale,
            report=report,
            judged=judged,
            policy_id=self.policy.id,
            policy_version=self.policy.version,
            model_versions=versions,
            timings_ms=timings,
            errors=errors,
            external_id=item.external_id,
            source=item.source,
        )

