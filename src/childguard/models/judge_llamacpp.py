"""LlamaCppJudge: the CPU default, llama-cpp-python in process.

Why a hand-driven decode instead of `create_chat_completion`:
- Scores must be label-token probabilities. llama-cpp-python only returns logprobs with
  `logits_all=True`, which keeps n_ctx x n_vocab floats (2.5 GB for Qwen at 4096 tokens) and
  slows every decode. Here we read the logits of the one position where the label is chosen.
- The answer is decoded under the answer JSON schema by construction: the fixed parts of the
  schema are forced, the enum values (`yes`/`no`, the category codes) are chosen only among
  their own token sequences (a trie over the allowed options, renormalised over the allowed
  tokens, exactly what a grammar-constrained sampler allows), and the free-text rationale is
  generated greedily under `LlamaGrammar` rules for a JSON string. The resulting text is then
  parsed and validated with the same schema as every other backend.
- Prefix cache: the static system part (instructions, definitions, examples) is tokenized and
  evaluated once; its KV entries stay in the context and each request rewinds to the end of
  the prefix and evaluates only its own tokens (a `save_state` snapshot of the prefix restores
  it if anything else ever used the context). `prompt_tokens`/`cached_tokens` report it.
- The untrusted item is tokenized with special tokens disabled, so text like `<|im_end|>` in a
  message stays text and cannot close the user turn.
- Category scores: P(code | violation=yes) is read on the "yes" branch for every item, so items
  labelled "no" still get meaningful per-category scores for the review thresholds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from childguard.errors import ModelUnavailable
from childguard.models import weights
from childguard.models.base import Judge, JudgeInput, JudgeOutput
from childguard.models.judge import (
    MAX_WINDOWS,
    NO,
    NONE,
    YES,
    error_output,
    fit_to_context,
    guarded,
    output_from_questions,
    output_from_scores,
    parse_answer,
    parse_question_answer,
    question_prompt,
    render_item,
)
from childguard.policy import Policy
from childguard.settings import Settings

_SENTINEL = "\x00CHILDGUARD_USER_CONTENT\x00"
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class LlamaCppJudge(Judge):
    name = "llama_cpp"

    def __init__(
        self,
        model_path: Path,
        policy: Policy,
        *,
        model_name: str | None = None,
        n_threads: int = 2,
        n_ctx: int = 4096,
        prefix_cache: bool = True,
        rationale_tokens: int = 32,
        seed: int = 0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelUnavailable(f"llama-cpp-python is not importable: {exc}") from exc
        if not Path(model_path).is_file():
            raise ModelUnavailable(f"judge model file {model_path} does not exist")
        self.policy = policy
        self.prefix_cache = prefix_cache
        self.rationale_tokens = max(0, min(rationale_tokens, policy.spec.judge.max_tokens))
        self._model_name = model_name or Path(model_path).stem
        try:
            self.llm = Llama(
                model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads,
                n_threads_batch=n_threads, n_batch=512, logits_all=False, seed=seed,
                verbose=False,
            )
        except Exception as exc:
            raise ModelUnavailable(f"llama.cpp could not load {model_path}: {exc}") from exc
        self._n_vocab = self.llm.n_vocab()
        self._n_ctx = self.llm.n_ctx()
        self._lock = threading.Lock()
        self._head_text, self._tail_text = self._chat_frame(policy.render_system())
        self._head = self.llm.tokenize(self._head_text.encode(), add_bos=True, special=True)
        self._tail = self.llm.tokenize(self._tail_text.encode(), add_bos=False, special=True)
        self._prefix_state: Any = None
        self._logits_valid = False
        self._piece_cache: dict[int, str] = {}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> LlamaCppJudge:
        path, name = weights.gguf_ref(settings, settings.judge.model)
        return cls(path, policy, model_name=name,
                   n_threads=settings.judge.threads, n_ctx=settings.judge.n_ctx,
                   prefix_cache=settings.judge.prefix_cache)

    @property
    def model_version(self) -> str:
        return f"{self._model_name}@llama.cpp"

    def close(self) -> None:
        self.llm.close()

    def use_policy(self, policy: Policy) -> None:
        """A new policy means a new system prompt: the cached prefix state goes with it."""
        with self._lock:
            super().use_policy(policy)
            self.rationale_tokens = min(self.rationale_tokens, policy.spec.judge.max_tokens)
            self._head_text, self._tail_text = self._chat_frame(policy.render_system())
            self._head = self.llm.tokenize(self._head_text.encode(), add_bos=True, special=True)
            self._tail = self.llm.tokenize(self._tail_text.encode(), add_bos=False, special=True)
            self._prefix_state = None
            self._logits_valid = False

    def _chat_frame(self, system: str) -> tuple[str, str]:
        """(text before the user content, text after it) from the model's chat template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template") or _CHATML
        eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode(errors="ignore")
        bos_id = self.llm.token_bos()
        bos = self.llm.detokenize([bos_id], special=True).decode(errors="ignore") \
            if bos_id >= 0 else ""
        fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                  add_generation_prompt=True)
        prompt = fmt(messages=[{"role": "system", "content": system},
                               {"role": "user", "content": _SENTINEL}]).prompt
        if prompt.count(_SENTINEL) != 1 or system not in prompt:
            raise ModelUnavailable("the model's chat template does not render a system and a "
                                   "user message; cannot build the judge prompt")
        head, tail = prompt.split(_SENTINEL)
        if bos and head.startswith(bos):
            head = head[len(bos):]  # tokenize(add_bos=True) adds it when the model wants it
        return head, tail

    # -- low-level helpers --------------------------------------------------------------
    def _eval(self, tokens: Sequence[int]) -> None:
        if tokens:
            self.llm.eval(list(tokens))
            self._logits_valid = True

    def _rewind(self, n: int) -> None:
        if n != self.llm.n_tokens:
            self.llm.n_tokens = n
            self._logits_valid = False

    def _ensure_logits(self) -> None:
        """Logits for the last evaluated position (re-decode one token after a rewind)."""
        if not self._logits_valid:
            n = self.llm.n_tokens
            last = int(self.llm.input_ids[n - 1])
            self._rewind(n - 1)
            self._eval([last])

    def _logits(self) -> np.ndarray:
        import llama_cpp

        self._ensure_logits()
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _tok(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False)

    def _piece(self, token: int) -> str:
        if token not in self._piece_cache:
            self._piece_cache[token] = self.llm.detokenize([token]).decode("utf-8", "replace")
        return self._piece_cache[token]

    def _start(self, user_tokens: list[int], use_cache: bool,
               with_tail: bool = True) -> tuple[int, int]:
        """Put head + user + tail in the context; returns (prompt tokens, cached tokens)."""
        head = self._head
        h = len(head)
        cached = 0
        if use_cache:
            in_place = self.llm.n_tokens >= h and np.array_equal(
                self.llm.input_ids[:h], np.asarray(head, dtype=self.llm.input_ids.dtype))
            if in_place:
                self._rewind(h)
            elif self._prefix_state is not None:
                self.llm.load_state(self._prefix_state)
                self._logits_valid = False
            else:
                self._rewind(0)
                self._eval(head)
                self._prefix_state = self.llm.save_state()
            cached = h
        else:
            self._rewind(0)
            self._eval(head)
        tail = self._tail if with_tail else []
        self._eval(user_tokens + tail)
        return h + len(user_tokens) + len(tail), cached

    def _sync(self, base: int, answer: list[int]) -> None:
        """Make the context hold prompt[:base] + answer (rewind to the common prefix, eval)."""
        cur = self.llm.input_ids[base:self.llm.n_tokens].tolist() if self.llm.n_tokens > base \
            else []
        k = 0
        while k < min(len(cur), len(answer)) and cur[k] == answer[k]:
            k += 1
        self._rewind(base + k)
        self._eval(answer[k:])

    def _choose(self, base: int, before: str, options: Sequence[str]) -> dict[str, float]:
        """P(option) for the JSON string value after `before` (renormalised over the
        allowed token sequences); leaves the context at `before`."""
        seqs = {o: self._tok(before + o + '"') for o in options}
        common = list(seqs[options[0]])
        for s in seqs.values():
            k = 0
            while k < min(len(common), len(s)) and common[k] == s[k]:
                k += 1
            common = common[:k]
        self._sync(base, common)
        rest = {o: s[len(common):] for o, s in seqs.items()}
        return self._walk(base + len(common), rest)

    def _walk(self, pos: int, rest: dict[str, list[int]]) -> dict[str, float]:
        """Probabilities of the options below the current trie node at context `pos`."""
        if len(rest) == 1:
            return dict.fromkeys(rest, 1.0)
        if any(not r for r in rest.values()):
            raise ValueError("an option's tokens are a prefix of another's; cannot score")
        groups: dict[int, dict[str, list[int]]] = {}
        for o, r in rest.items():
            groups.setdefault(r[0], {})[o] = r[1:]
        if len(groups) == 1:
            (tok, sub), = groups.items()
            self._rewind(pos)
            self._eval([tok])
            return self._walk(pos + 1, sub)
        self._rewind(pos)
        logits = self._logits()
        toks = list(groups)
        lg = np.array([float(logits[t]) for t in toks])
        p = np.exp(lg - lg.max())
        p /= p.sum()
        out: dict[str, float] = {}
        for tok, pt, in zip(toks, p, strict=True):
            sub = groups[tok]
            if len(sub) == 1:
                out.update(dict.fromkeys(sub, float(pt)))
                continue
            self._rewind(pos)
            self._eval([tok])
            for o, q in self._walk(pos + 1, sub).items():
                out[o] = float(pt) * q
        self._rewind(pos)
        return out

    def _rationale(self, max_tokens: int) -> str:
        """Greedy JSON-string content until a closing quote (capped at max_tokens)."""
        out = ""
        for _ in range(max_tokens):
            logits = self._logits()
            order = np.argsort(-logits[: self._n_vocab])[:64]
            chosen = None
            for t in order.tolist():
                if self.llm.token_eos() == t:
                    return out
                piece = self._piece(t)
                if not piece or "\\" in piece or any(ord(c) < 32 for c in piece):
                    continue
                chosen = (t, piece)
                break
            if chosen is None:
                return out
            t, piece = chosen
            if '"' in piece:
                return out + piece.split('"', 1)[0]
            out += piece
            self._eval([t])
        return out.rstrip() + "..."

    # -- judging ------------------------------------------------------------------------
    def judge(self, item: JudgeInput) -> JudgeOutput:
        return self.judge_with(item, use_cache=self.prefix_cache)

    def judge_with(self, item: JudgeInput, *, use_cache: bool,
                   rationale: bool = True) -> JudgeOutput:
        """`judge` with the prefix cache switched per call (the benchmark compares both).
        Items holding classifier-directed text are judged in two views (`guarded`)."""
        return guarded(lambda i: self._judge_view(i, use_cache, rationale), item)

    def _prompt_tokens(self, item: JudgeInput) -> int:
        return len(self._head) + len(self._tok(render_item(self.policy, item).user)) \
            + len(self._tail)

    def _judge_view(self, item: JudgeInput, use_cache: bool, rationale: bool) -> JudgeOutput:
        """One view of the item, cut to the context when it is too long (`fit_to_context`:
        oldest earlier messages dropped, else the message judged in windows)."""
        budget = self._n_ctx - self.policy.spec.judge.max_tokens - 64
        try:
            with self._lock:
                out = fit_to_context(
                    lambda it: self._judge_fitted(it, use_cache, rationale), item,
                    lambda it: self._prompt_tokens(it) <= budget)
                if out is None:
                    n_total = self._prompt_tokens(item)
                    return error_output(
                        f"item too long for the judge: {n_total} prompt tokens; the context "
                        f"holds {self._n_ctx} (judge.n_ctx) minus the answer budget, and the "
                        f"message does not fit in {MAX_WINDOWS} windows",
                        model=self.model_version, prompt_tokens=n_total)
        except Exception as exc:  # tokenizing is model work too: never raises out of a judge
            return error_output(f"llama.cpp judge failed: {type(exc).__name__}: {exc}",
                                model=self.model_version)
        return out

    def _judge_fitted(self, item: JudgeInput, use_cache: bool, rationale: bool) -> JudgeOutput:
        """Judge an item that fits the context (the caller holds the lock)."""
        t0 = time.perf_counter()
        n_prompt = cached = 0
        try:
            rendered = render_item(self.policy, item)
            user = self._tok(rendered.user)
            if self.policy.spec.judge.mode == "per_category":
                return self._per_category(rendered, user, use_cache, t0)
            n_prompt, cached = self._start(user, use_cache)
            base = self.llm.n_tokens
            pv = self._choose(base, '{"violation": "', [YES, NO])
            p_yes = pv[YES]
            codes = list(self.policy.spec.codes)
            yes_prefix = '{"violation": "yes", "category": "'
            pc = self._choose(base, yes_prefix, codes)
            if p_yes >= 0.5:
                cat = max(pc, key=pc.__getitem__)
                text = yes_prefix + cat + '", "rationale": "'
                self._sync(base, self._tok(text))
                why = self._rationale(self.rationale_tokens) if rationale else ""
                answer_text = text + why.replace('"', "") + '"}'
            else:
                answer_text = json.dumps({"violation": NO, "category": NONE,
                                          "rationale": ""})
            ans = parse_answer(answer_text, self.policy)
            return output_from_scores(
                self.policy, p_yes, pc, rationale=ans.rationale.strip(),
                chosen_category=ans.category, model=self.model_version,
                elapsed_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n_prompt,
                cached_tokens=cached)
        except Exception as exc:  # model trouble never raises out of a judge
            self._logits_valid = False
            return error_output(f"llama.cpp judge failed: {type(exc).__name__}: {exc}",
                                model=self.model_version,
                                elapsed_ms=(time.perf_counter() - t0) * 1000,
                                prompt_tokens=n_prompt, cached_tokens=cached)

    def _per_category(self, rendered: Any, user: list[int], use_cache: bool,
                      t0: float) -> JudgeOutput:
        """One yes/no question per category; prefix + item evaluated once, shared by all."""
        _, cached = self._start(user, use_cache, with_tail=False)
        item_end = self.llm.n_tokens
        n_prompt = 0
        scores: dict[str, float] = {}
        for i, cat in enumerate(self.policy.spec.categories):
            q = question_prompt(rendered, cat.question)
            extra = self._tok(q.user[len(rendered.user.rstrip("\n")):])
            self._rewind(item_end)
            self._eval(extra + self._tail)
            n_prompt += item_end + len(extra) + len(self._tail)
            if i > 0:  # later questions reuse the system prefix and the item from the context
                cached += item_end
            base = self.llm.n_tokens
            p = self._choose(base, '{"answer": "', [YES, NO])
            parse_question_answer(json.dumps({"answer": YES if p[YES] >= 0.5 else NO}))
            scores[cat.code] = p[YES]
        return output_from_questions(
            self.policy, scores, model=self.model_version,
            elapsed_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=n_prompt,
            cached_tokens=cached)
