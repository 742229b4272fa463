"""VllmJudge: vLLM's engine in process, for GPU machines (the `gpu` extra).

Why: a GPU worker that owns its model avoids an HTTP hop and batches the whole
`judge_batch` in one `LLM.chat` call. The engine is created with automatic prefix caching, so
the static system part of the one policy prompt is computed once and its KV blocks are shared
by every request; answers are constrained to the answer JSON schema by structured-output
(guided) decoding, and label probabilities come from the returned logprobs, read exactly as for
the OpenAI-compatible server (`option_probs_at`).

vLLM does not run on the CPUs of the development machine and is not in the CPU venv: the import
is guarded and `from_settings` raises `ModelUnavailable` saying how to install it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from childguard.errors import ModelUnavailable
from childguard.models import weights
from childguard.models.base import Judge, JudgeInput, JudgeOutput
from childguard.models.judge import (
    LABELS,
    QUESTION_SCHEMA,
    YES,
    TokenAlts,
    answer_schema,
    combine_views,
    error_output,
    option_probs_at,
    output_from_questions,
    output_from_scores,
    parse_answer,
    parse_question_answer,
    question_prompt,
    render_item,
    value_offset,
    without_injections,
)
from childguard.policy import Policy, RenderedPrompt
from childguard.schema import Status
from childguard.settings import Settings


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ModelUnavailable(
            "judge.backend=vllm needs vLLM (a GPU machine): pip install -e '.[gpu]'; on CPU "
            "use judge.backend=llama_cpp"
        ) from exc
    return vllm


def _structured(vllm: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams kwargs for JSON-schema decoding across vLLM versions."""
    try:  # vLLM >= 0.11
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:  # older releases
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VllmJudge(Judge):
    name = "vllm"

    def __init__(self, model: str, policy: Policy, *, n_ctx: int = 4096, top_logprobs: int = 20,
                 engine: Any = None) -> None:
        self._vllm = _import_vllm()
        self.model = model
        self.policy = policy
        self.top_logprobs = top_logprobs
        try:
            self.llm = engine or self._vllm.LLM(
                model=model, enable_prefix_caching=True, max_model_len=n_ctx, seed=0,
                max_logprobs=top_logprobs,
            )
        except Exception as exc:
            raise ModelUnavailable(f"vLLM could not load {model}: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> VllmJudge:
        ref = settings.judge.model
        model = ref
        if not Path(ref).exists():
            try:  # one of our packaged GGUFs (vLLM's GGUF support is experimental)
                model = str(weights.model_path(settings, ref))
            except ModelUnavailable:
                model = ref  # a Hugging Face id or a local checkpoint directory
        return cls(model, policy, n_ctx=settings.judge.n_ctx)

    @property
    def model_version(self) -> str:
        return f"{Path(self.model).name}@vllm"

    def _params(self, schema: dict[str, Any], max_tokens: int) -> Any:
        return self._vllm.SamplingParams(
            temperature=0.0, max_tokens=max_tokens, logprobs=self.top_logprobs, seed=0,
            **_structured(self._vllm, schema),
        )

    def _run(self, prompts: Sequence[RenderedPrompt], schema: dict[str, Any],
             max_tokens: int) -> list[tuple[str, list[TokenAlts], int, int]]:
        outs = self.llm.chat([p.as_messages() for p in prompts],
                             self._params(schema, max_tokens), use_tqdm=False)
        results = []
        for out in outs:
            comp = out.outputs[0]
            tokens: list[TokenAlts] = []
            for tok_id, alts in zip(comp.token_ids, comp.logprobs or [], strict=False):
                chosen = alts.get(tok_id)
                text = (chosen.decoded_token if chosen is not None else "") or ""
                tokens.append((text, [(a.decoded_token or "", float(a.logprob))
                                      for a in alts.values()]))
            results.append((comp.text, tokens, len(out.prompt_token_ids or []),
                            int(getattr(out, "num_cached_tokens", 0) or 0)))
        return results

    def judge(self, item: JudgeInput) -> JudgeOutput:
        return self.judge_batch([item])[0]

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        """One engine call for the batch, a second one for the injection-stripped views of
        the items that hold classifier-directed text (see `judge.guarded`)."""
        first = self._batch_view(items)
        views = [without_injections(i) for i in items]
        redo = [k for k, (_, n) in enumerate(views) if n and first[k].status == Status.OK]
        if redo:
            second = self._batch_view([views[k][0] for k in redo])
            for k, out in zip(redo, second, strict=True):
                first[k] = combine_views(first[k], out, views[k][1])
        return first

    def _batch_view(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        t0 = time.perf_counter()
        if self.policy.spec.judge.mode == "per_category":
            return [self._per_category(i) for i in items]
        prompts = [render_item(self.policy, i, defang_special=True) for i in items]
        try:
            raw = self._run(prompts, answer_schema(self.policy),
                            self.policy.spec.judge.max_tokens)
        except Exception as exc:  # engine trouble: every item fails closed
            return [error_output(f"vllm judge failed: {type(exc).__name__}: {exc}",
                                 model=self.model_version) for _ in items]
        elapsed = (time.perf_counter() - t0) * 1000 / max(1, len(items))
        return [self._one(r, elapsed) for r in raw]

    def _one(self, r: tuple[str, list[TokenAlts], int, int], elapsed: float) -> JudgeOutput:
        content, tokens, n_prompt, n_cached = r
        try:
            ans = parse_answer(content, self.policy)
            off = value_offset(content, "violation")
            pv = option_probs_at(content, tokens, off, LABELS) if off is not None else None
            if pv is None:
                raise ValueError("no label probabilities at the violation position")
            pc = None
            if ans.violation == YES:
                coff = value_offset(content, "category")
                if coff is not None:
                    pc = option_probs_at(content, tokens, coff, self.policy.spec.codes)
            return output_from_scores(
                self.policy, pv[YES], pc, rationale=ans.rationale.strip(),
                chosen_category=ans.category, model=self.model_version, elapsed_ms=elapsed,
                prompt_tokens=n_prompt, cached_tokens=n_cached)
        except ValueError as exc:
            return error_output(f"vllm judge: {exc}", model=self.model_version,
                                elapsed_ms=elapsed, prompt_tokens=n_prompt,
                                cached_tokens=n_cached)

    def _per_category(self, item: JudgeInput) -> JudgeOutput:
        t0 = time.perf_counter()
        rendered = render_item(self.policy, item, defang_special=True)
        cats = self.policy.spec.categories
        try:
            raw = self._run([question_prompt(rendered, c.question) for c in cats],
                            QUESTION_SCHEMA, 16)
            scores: dict[str, float] = {}
            for cat, (content, tokens, _, _) in zip(cats, raw, strict=True):
                parse_question_answer(content)
                off = value_offset(content, "answer")
                p = option_probs_at(content, tokens, off, LABELS) if off is not None else None
                if p is None:
                    raise ValueError(f"no label probabilities for question {cat.code}")
                scores[cat.code] = p[YES]
        except Exception as exc:
            return error_output(f"vllm judge failed: {type(exc).__name__}: {exc}",
                                model=self.model_version,
                                elapsed_ms=(time.perf_counter() - t0) * 1000)
        return output_from_questions(
            self.policy, scores, model=self.model_version,
            elapsed_ms=(time.perf_counter() - t0) * 1000,
            prompt_tokens=sum(r[2] for r in raw), cached_tokens=sum(r[3] for r in raw))
