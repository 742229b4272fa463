"""OpenAICompatibleJudge: the client for vLLM's OpenAI-compatible server (or llama_cpp.server).

Why: in production the judge runs on GPUs behind vLLM's server, shared by many replicas; this
client sends the one policy prompt as chat messages (the static system message first, so the
server's automatic prefix caching reuses its KV blocks), constrains the answer to the answer JSON
schema with `response_format`, asks for `logprobs`/`top_logprobs` and reads the label
probabilities from them (never a number the model writes).

Two `response_format` dialects exist: OpenAI/vLLM take `{"type": "json_schema", "json_schema":
{...}}`; llama_cpp.server takes `{"type": "json_object", "schema": {...}}`. The client starts
with the first and switches once, for good, if the server rejects it (an error naming it).
Control-token spellings inside the item are defanged, because servers tokenize the rendered
chat with special tokens enabled.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from childguard.errors import ModelUnavailable
from childguard.models.base import Judge, JudgeInput, JudgeOutput
from childguard.models.judge import (
    LABELS,
    QUESTION_SCHEMA,
    YES,
    TokenAlts,
    answer_schema,
    error_output,
    guarded,
    option_probs_at,
    output_from_questions,
    output_from_scores,
    parse_answer,
    parse_question_answer,
    question_prompt,
    render_item,
    value_offset,
)
from childguard.policy import Policy, RenderedPrompt
from childguard.settings import Settings


class JudgeCallError(Exception):
    """One request to the judge server failed (turned into status=error by `judge`)."""


class OpenAICompatibleJudge(Judge):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        policy: Policy,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        top_logprobs: int = 20,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.policy = policy
        self.top_logprobs = top_logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout_s, headers=headers)
        self._dialect = "json_schema"

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> OpenAICompatibleJudge:
        if not settings.judge.url:
            raise ModelUnavailable(
                "judge.backend=openai needs judge.url (the server's base URL ending in /v1), "
                "e.g. CHILDGUARD_JUDGE__URL=http://127.0.0.1:8001/v1"
            )
        return cls(settings.judge.url, settings.judge.model, policy,
                   api_key=settings.judge.api_key, timeout_s=settings.judge.timeout_s)

    @property
    def model_version(self) -> str:
        return f"{self.model}@openai:{self.base_url}"

    def close(self) -> None:
        self._client.close()

    def check(self) -> None:
        """Start-up check: the server answers /models (ModelUnavailable otherwise)."""
        try:
            r = self._client.get(f"{self.base_url}/models")
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"judge server {self.base_url} is not reachable: {exc}") \
                from exc

    # -- one request --------------------------------------------------------------------
    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._dialect == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "judge_answer", "schema": schema, "strict": True}}
        return {"type": "json_object", "schema": schema}

    def _complete(self, prompt: RenderedPrompt, schema: dict[str, Any], max_tokens: int
                  ) -> tuple[str, list[TokenAlts], int, int]:
        for _attempt in range(2):
            body = {
                "model": self.model,
                "messages": prompt.as_messages(),
                "temperature": 0.0,
                "max_tokens": max_tokens,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
                "seed": 0,
                "response_format": self._response_format(schema),
            }
            try:
                r = self._client.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.HTTPError as exc:
                raise JudgeCallError(f"judge server {self.base_url} unreachable: "
                                     f"{type(exc).__name__}: {exc}") from exc
            # llama_cpp.server rejects the json_schema dialect with a 4xx or a 500 that names it
            if r.status_code >= 400 and "response_format" in r.text \
                    and self._dialect == "json_schema":
                self._dialect = "json_object_schema"
                continue
            if r.status_code != 200:
                raise JudgeCallError(f"judge server answered HTTP {r.status_code}: "
                                     f"{r.text[:200]}")
            break
        try:
            data = r.json()
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
            lp = (choice.get("logprobs") or {}).get("content") or []
            tokens: list[TokenAlts] = [
                (t["token"], [(a["token"], float(a["logprob"])) for a in t.get("top_logprobs")
                              or []] or [(t["token"], float(t["logprob"]))])
                for t in lp
            ]
            usage = data.get("usage") or {}
            n_prompt = int(usage.get("prompt_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            n_cached = int(details.get("cached_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeCallError(f"judge server answer has an unexpected shape: {exc}") from exc
        if not tokens:
            raise JudgeCallError("judge server returned no logprobs; it must support "
                                 "logprobs/top_logprobs (llama_cpp.server: logits_all)")
        return content, tokens, n_prompt, n_cached

    # -- judging ------------------------------------------------------------------------
    def judge(self, item: JudgeInput) -> JudgeOutput:
        """One item; classifier-directed text inside it is judged in two views (`guarded`)."""
        return guarded(self._judge_view, item)

    def _judge_view(self, item: JudgeInput) -> JudgeOutput:
        t0 = time.perf_counter()
        try:
            rendered = render_item(self.policy, item, defang_special=True)
            if self.policy.spec.judge.mode == "per_category":
                return self._per_category(rendered, t0)
            content, tokens, n_prompt, n_cached = self._complete(
                rendered, answer_schema(self.policy), self.policy.spec.judge.max_tokens)
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
                chosen_category=ans.category, model=self.model_version,
                elapsed_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n_prompt,
                cached_tokens=n_cached)
        except (JudgeCallError, ValueError) as exc:
            return error_output(f"openai judge: {exc}", model=self.model_version,
                                elapsed_ms=(time.perf_counter() - t0) * 1000)

    def _per_category(self, rendered: RenderedPrompt, t0: float) -> JudgeOutput:
        scores: dict[str, float] = {}
        n_prompt = n_cached = 0
        for cat in self.policy.spec.categories:
            q = question_prompt(rendered, cat.question)
            content, tokens, p, c = self._complete(q, QUESTION_SCHEMA, 16)
            parse_question_answer(content)
            off = value_offset(content, "answer")
            probs = option_probs_at(content, tokens, off, LABELS) if off is not None else None
            if probs is None:
                raise ValueError(f"no label probabilities for question {cat.code}")
            scores[cat.code] = probs[YES]
            n_prompt += p
            n_cached += c
        return output_from_questions(
            self.policy, scores, model=self.model_version,
            elapsed_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n_prompt,
            cached_tokens=n_cached)
