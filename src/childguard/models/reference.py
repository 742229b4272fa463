"""Deterministic reference judge: scores you set, for tests and demos of the other stages.

Why: the pipeline, serving and review tests need a judge whose answer they can predict, with
the same interface and output shape as the real ones (it passes the same contract suite). It
scores by fixed rules, never by a model:
- `scores`: a map item_id -> {category code: score} wins if the item is listed;
- otherwise `keywords`: a map lower-case marker -> category code; a marker found in the item's
  text, normalised text, context or OCR text gives that category `hit_score`;
- the default markers are neutral test tokens `cg-test:<code>` (e.g. "cg-test:grooming") so
  tests can ask for a positive without writing any harmful text; `cg-test:error` returns
  status=error, `cg-test:raise` raises, and `cg-test:slow` answers only after `slow_s`
  seconds (twice the stage timeout from settings), to exercise the fail-closed paths.
Instructions inside the item cannot change the rules, so it is injection-proof by construction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from childguard.models.base import Judge, JudgeInput, JudgeOutput
from childguard.models.judge import error_output, render_item
from childguard.policy import Policy
from childguard.schema import Status
from childguard.settings import Settings

ERROR_MARKER = "cg-test:error"
RAISE_MARKER = "cg-test:raise"
SLOW_MARKER = "cg-test:slow"


class ReferenceJudge(Judge):
    name = "reference"

    def __init__(
        self,
        policy: Policy,
        *,
        scores: Mapping[str, Mapping[str, float]] | None = None,
        keywords: Mapping[str, str] | None = None,
        hit_score: float = 0.97,
        base_score: float = 0.02,
        slow_s: float = 60.0,
    ) -> None:
        self.policy = policy
        self.slow_s = slow_s
        codes = policy.spec.codes
        self.scores = {k: dict(v) for k, v in (scores or {}).items()}
        self.keywords = {k.lower(): v for k, v in (keywords or {}).items()}
        if keywords is None:
            self.keywords = {f"cg-test:{c}": c for c in codes}
        for kw, code in self.keywords.items():
            if code not in codes:
                raise ValueError(f"keyword {kw!r} maps to {code!r}; allowed codes: {codes}")
        for item_id, m in self.scores.items():
            bad = sorted(set(m) - set(codes))
            if bad:
                raise ValueError(f"scores for {item_id!r} name unknown codes {bad}; "
                                 f"allowed: {codes}")
        self.hit_score = hit_score
        self.base_score = base_score

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> ReferenceJudge:
        return cls(policy, slow_s=2 * settings.serve.stage_timeout_s)

    @property
    def model_version(self) -> str:
        return f"reference-judge@{self.policy.version}"

    def judge(self, item: JudgeInput) -> JudgeOutput:
        t0 = time.perf_counter()
        rendered = render_item(self.policy, item)
        n_prompt = len((rendered.system + rendered.user).split())
        n_cached = len(rendered.system.split())
        haystack = " ".join(
            s for s in (item.text, item.normalized, item.ocr_text,
                        *(m.text for m in item.context)) if s
        ).lower()
        if RAISE_MARKER in haystack:
            raise RuntimeError("reference judge: raise marker in the item")
        if SLOW_MARKER in haystack:
            time.sleep(self.slow_s)
        if ERROR_MARKER in haystack:
            return error_output("reference judge: error marker in the item",
                                model=self.model_version, prompt_tokens=n_prompt,
                                cached_tokens=n_cached)
        codes = self.policy.spec.codes
        if item.item_id in self.scores:
            scores = {c: float(self.scores[item.item_id].get(c, 0.0)) for c in codes}
        else:
            scores = dict.fromkeys(codes, self.base_score)
            for kw, code in self.keywords.items():
                if kw in haystack:
                    scores[code] = self.hit_score
        top = max(codes, key=scores.__getitem__)
        v = scores[top]
        hit = v >= 0.5
        return JudgeOutput(
            status=Status.OK, violation=v, category=top if hit else None,
            category_scores=scores,
            rationale=f"reference rule matched {top}" if hit else "",
            model=self.model_version,
            elapsed_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n_prompt,
            cached_tokens=n_cached,
        )
