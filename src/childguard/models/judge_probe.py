"""The probe judge: the judge model reads the item, trained probes on its hidden state answer.

Why: on this CPU the packaged 1.5B judge cannot be made to *say* the right answer reliably (a
yes/no prompt reaches sexual/minors AUPRC 0.26 on the OpenAI moderation rows), but what it has read
is in its hidden state, and a linear probe on the last prompt token's hidden state, trained on our
labelled sets, needs one prompt pass and no generated tokens. This judge keeps the judge's place in
the cascade (the gate sends it what the cheap MiniLM probes cannot settle) and its contract
(`JudgeOutput` with per-category probabilities, never raises), and replaces generation with the
trained probes. Measured so far (5-fold CV on 130 rows / 29 positives of the OpenAI moderation dev
half, 1.5B judge): sexual/minors AUPRC 0.66-0.68, about what the MiniLM probes reach on the same
rows (0.69-0.70), not better; so it is not the default. It is the way to use a larger model's
hidden state (any GGUF `judge.model`) without trusting its generated answer.

Its probes are a `ProbeSet` like the text probes, trained by `childguard eval train-probes
--judge-features` (or inside an eval run with `--train-probes`, cross-fitted), saved under the
probes folder and found by the embedder's version (model + prompt template + weights checksum).
Without them the judge refuses to start (`ModelUnavailable` naming the command): a judge with no
probes would have no answer.

The rationale is written from the scores and the policy's category names, so a reviewer reads
which category the judge model's reading points to and how strongly, e.g. "The judge model's
reading points to 'Grooming' (p=0.91; review at 0.30)". It never quotes the item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from childguard.errors import ModelUnavailable
from childguard.models.base import Judge, JudgeInput, JudgeOutput, TextEmbedder
from childguard.models.judge import error_output
from childguard.policy import Policy
from childguard.schema import Status
from childguard.settings import Settings

__all__ = ["ProbeJudge", "judge_features_embedder", "judge_text", "with_feature_cache"]


def judge_text(item: JudgeInput, context_messages: int) -> str:
    """What the probe judge embeds: the last `context_messages` messages, the normalised text
    and any text read from the image, joined as `eval train-probes` joins context and text."""
    parts = [m.text for m in item.context[-context_messages:]] if context_messages > 0 else []
    text = item.normalized or item.text
    if text:
        parts.append(text)
    if item.ocr_text:
        parts.append(item.ocr_text)
    return "\n".join(parts)


def with_feature_cache(settings: Settings) -> Settings:
    """`settings` with the hidden-state cache on (`<home>/cache/judge-features` unless set):
    training and evaluation read the same items run after run; the service does not cache."""
    if settings.judge.feature_cache_dir is not None:
        return settings
    return settings.model_copy(update={"judge": settings.judge.model_copy(
        update={"feature_cache_dir": settings.home / "cache" / "judge-features"})})


def judge_features_embedder(settings: Settings) -> TextEmbedder:
    """The judge model's hidden-state embedder, as configured (`judge.model`, `judge.threads`,
    `judge.feature_cache_dir`)."""
    from childguard.models import weights
    from childguard.models.hidden_state import LlamaHiddenEmbedder

    path, name = weights.gguf_ref(settings, settings.judge.model)
    # a packaged model's checksum is pinned (and verified by gguf_ref); a local file is hashed
    pinned = weights.spec(name).sha256 if name == settings.judge.model else ""
    checksum = pinned or weights.sha256_file(path)
    return LlamaHiddenEmbedder(
        path, model_name=name, checksum=checksum, n_threads=settings.judge.threads,
        cache_dir=settings.judge.feature_cache_dir,
    )


class ProbeJudge(Judge):
    """Per-category probabilities from probes on the judge model's hidden state."""

    name = "llm_probe"

    def __init__(self, policy: Policy, embedder: TextEmbedder, probes: Any | None, *,
                 context_messages: int = 3) -> None:
        self.policy = policy
        self.embedder = embedder
        self.context_messages = context_messages
        self._lock = threading.Lock()
        self.probes: Any | None = None
        self.codes: tuple[str, ...] = ()
        if probes is not None:
            self.use_probes(probes)

    @classmethod
    def untrained(cls, settings: Settings, policy: Policy) -> ProbeJudge:
        """The judge without probes, for an eval run that trains them (`use_probes` before
        judging; until then every answer is status=error, which the pipeline sends to review)."""
        return cls(policy, judge_features_embedder(settings), None,
                   context_messages=settings.models.probe_context_messages)

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> ProbeJudge:
        from childguard.models.probes import ProbeSet

        embedder = judge_features_embedder(settings)
        probes = ProbeSet.load_default(settings, embedder=embedder.model_version)
        if probes is None:
            close = getattr(embedder, "close", None)
            if close is not None:
                close()
            raise ModelUnavailable(
                f"judge backend llm_probe: no probes trained on {embedder.model_version} in "
                f"{settings.probes_dir}; train them with `childguard eval train-probes "
                "--judge-features -d 'openai_moderation[train]' "
                "-d 'evaluation_sets/child_safety_v1.jsonl[train]'`"
            )
        return cls(policy, embedder, probes,
                   context_messages=settings.models.probe_context_messages)

    def use_probes(self, probes: Any) -> None:
        """Score with `probes` from now on (an eval run's out-of-fold sets)."""
        if probes.dim != self.embedder.dim:
            raise ModelUnavailable(
                f"judge probes {probes.version} expect {probes.dim}-d features; "
                f"{self.embedder.model_version} gives {self.embedder.dim}")
        known = set(self.policy.spec.codes)
        self.probes = probes
        self.codes = tuple(c for c in probes.categories if c in known)

    @property
    def model_version(self) -> str:
        probes = self.probes.model_version if self.probes is not None else "probes:untrained"
        return f"{self.embedder.model_version}+{probes}"

    def close(self) -> None:
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()

    def judge(self, item: JudgeInput) -> JudgeOutput:
        return self.judge_batch([item])[0]

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        t0 = time.perf_counter()
        texts = [judge_text(it, self.context_messages) for it in items]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        todo = [i for i in range(len(items)) if i not in empty]
        outs: list[JudgeOutput | None] = [None] * len(items)
        for i in empty:  # an image with no text read from it: nothing for this judge to read
            outs[i] = error_output("the probe judge reads text; this item has none",
                                   model=self.model_version)
        if todo and self.probes is None:
            for i in todo:
                outs[i] = error_output("the probe judge has no trained probes",
                                       model=self.model_version)
        elif todo:
            probes: Any = self.probes
            try:
                with self._lock:
                    X = np.asarray(self.embedder.embed_texts([texts[i] for i in todo]))
                    preds = probes.predict(X)
            except Exception as exc:  # model trouble is an answer, not an exception
                ms = (time.perf_counter() - t0) * 1000.0
                for i in todo:
                    outs[i] = error_output(f"probe judge failed: {type(exc).__name__}",
                                           model=self.model_version, elapsed_ms=ms)
                return [o for o in outs if o is not None]
            ms = (time.perf_counter() - t0) * 1000.0 / len(items)
            size = getattr(self.embedder, "prompt_size", None)
            for row, i in enumerate(todo):
                scores = {c: round(float(np.clip(preds[c][row], 0.0, 1.0)), 6)
                          for c in self.codes}
                tokens, cached, cut = size(texts[i]) if size is not None else (0, 0, False)
                outs[i] = self._output(scores, ms, tokens, cached, cut)
        return [o for o in outs if o is not None]

    def _output(self, scores: dict[str, float], elapsed_ms: float, tokens: int, cached: int,
                cut: bool) -> JudgeOutput:
        top = max(scores, key=lambda c: scores[c]) if scores else None
        p = scores.get(top, 0.0) if top else 0.0
        rationale = self._rationale(scores)
        if cut:
            limit = getattr(self.embedder, "max_tokens", "the first")
            rationale += f" (Read the first {limit} tokens of a longer message.)"
        return JudgeOutput(
            status=Status.OK, violation=p, category=top if p >= 0.5 else None,
            category_scores=scores, rationale=rationale, model=self.model_version,
            elapsed_ms=round(elapsed_ms, 3), prompt_tokens=tokens, cached_tokens=cached,
        )

    def _rationale(self, scores: dict[str, float]) -> str:
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        if not ranked:
            return "The judge model's probes cover none of this policy's categories."
        lines = []
        for code, p in ranked:
            cat = self.policy.spec.category(code)
            if p >= cat.thresholds.review:
                lines.append(f"'{cat.name}' (p={p:.2f}; review at {cat.thresholds.review:.2f}, "
                             f"block at {cat.thresholds.block:.2f})")
        if lines:
            return ("The judge model's reading of the message points to " + "; ".join(lines)
                    + ". Scores come from probes trained on labelled examples, not from words "
                      "the model wrote.")
        code, p = ranked[0]
        cat = self.policy.spec.category(code)
        return (f"The judge model's reading of the message is below every review threshold; "
                f"highest is '{cat.name}' (p={p:.2f}, review at {cat.thresholds.review:.2f}).")
