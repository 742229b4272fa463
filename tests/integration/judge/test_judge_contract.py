"""The judge contract: every implementation passes the same suite.

reference (deterministic rules), llama.cpp in process (0.5B wiring model, for speed), the probe
judge (random-weight probes on the 0.5B model's hidden state) and the OpenAI-compatible client
against a real `llama_cpp.server` started on 127.0.0.1. The 0.5B model
gives poor labels, so these tests check the contract (shape, determinism, fail-closed errors,
prefix cache, constrained answers), not label quality; quality is measured by
benchmarks/judge_labels.py with the 1.5B judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from childguard.models import weights
from childguard.models.base import Judge, JudgeInput, JudgeOutput
from childguard.models.judge_llamacpp import LlamaCppJudge
from childguard.models.judge_openai import OpenAICompatibleJudge
from childguard.models.judge_probe import ProbeJudge
from childguard.models.reference import ReferenceJudge
from childguard.policy import JudgeConfig, Policy
from childguard.schema import Message, Status
from childguard.settings import Settings

BENIGN = JudgeInput(
    item_id="benign-1",
    text="Can you recommend a good recipe for banana bread?",
    normalized="can you recommend a good recipe for banana bread?",
    context=(Message(author="other", text="I have three ripe bananas."),),
    ocr_text="SALE",
    has_image=True,
)
HUGE = JudgeInput(item_id="huge", text="word " * 12_000)

_FIRST: dict[str, JudgeOutput] = {}


@pytest.fixture(scope="module")
def llama_judge(judge_gguf: Callable[[str], Path], judge_policy: Policy) -> Iterator[LlamaCppJudge]:
    j = LlamaCppJudge(judge_gguf(weights.WIRING_0_5B), judge_policy,
                      n_threads=2, n_ctx=2048, rationale_tokens=8)
    yield j
    j.close()


@pytest.fixture(scope="module")
def openai_judge(llama_server: str, judge_policy: Policy) -> Iterator[OpenAICompatibleJudge]:
    j = OpenAICompatibleJudge(llama_server, weights.WIRING_0_5B, judge_policy, timeout_s=600)
    yield j
    j.close()


@pytest.fixture(scope="module")
def probe_judge(judge_gguf: Callable[[str], Path], judge_policy: Policy) -> Iterator[ProbeJudge]:
    import numpy as np

    from childguard.models.hidden_state import LlamaHiddenEmbedder
    from childguard.models.probes import CategoryProbe, ProbeSet

    emb = LlamaHiddenEmbedder(judge_gguf(weights.WIRING_0_5B), model_name=weights.WIRING_0_5B,
                              checksum=weights.spec(weights.WIRING_0_5B).sha256)
    rng = np.random.default_rng(3)
    probes = ProbeSet(embedder=emb.model_version, dim=emb.dim, probes={
        c: CategoryProbe(weights=rng.normal(size=(1, emb.dim)), bias=np.zeros(1),
                         platt_a=np.full(1, -1.0), platt_b=np.zeros(1))
        for c in judge_policy.spec.codes})
    j = ProbeJudge(judge_policy, emb, probes)
    yield j
    j.close()


@pytest.fixture(
    params=[
        "reference",
        pytest.param("llama_cpp", marks=pytest.mark.models),
        pytest.param("llm_probe", marks=pytest.mark.models),
        pytest.param("openai", marks=[pytest.mark.models, pytest.mark.integration]),
    ]
)
def judge(request: pytest.FixtureRequest, judge_policy: Policy) -> Judge:
    if request.param == "reference":
        return ReferenceJudge(judge_policy)
    fixture = {"llama_cpp": "llama_judge", "openai": "openai_judge",
               "llm_probe": "probe_judge"}[request.param]
    j: Judge = request.getfixturevalue(fixture)
    return j


def _tol(judge: Judge) -> float:
    """Same answer up to numerics: llama_cpp.server reuses the KV of the previous request's
    prefix, and a different batch split changes float rounding (measured: 0.540 vs 0.525)."""
    return 0.03 if isinstance(judge, OpenAICompatibleJudge) else 2e-3


def _first(judge: Judge) -> JudgeOutput:
    key = type(judge).__name__
    if key not in _FIRST:
        _FIRST[key] = judge.judge(BENIGN)
    return _FIRST[key]


def test_contract_output_shape(judge: Judge, judge_policy: Policy) -> None:
    out = _first(judge)
    assert out.status == Status.OK, out.error
    assert 0.0 <= out.violation <= 1.0
    assert set(out.category_scores) == set(judge_policy.spec.codes)
    assert all(0.0 <= s <= 1.0 for s in out.category_scores.values())
    # category scores are P(yes) * P(code | yes) (or per-question P(yes) with max = violation)
    assert max(out.category_scores.values()) <= out.violation + 1e-6
    assert out.category is None or out.category in judge_policy.spec.codes
    assert (out.category is not None) == (out.violation >= 0.5)
    assert out.model == judge.model_version
    assert out.prompt_tokens > 0 and 0 <= out.cached_tokens <= out.prompt_tokens


def test_contract_deterministic(judge: Judge) -> None:
    first = _first(judge)
    again = judge.judge(BENIGN)
    assert again.status == Status.OK
    assert again.violation == pytest.approx(first.violation, abs=_tol(judge))
    if _tol(judge) <= 2e-3:  # bit-stable backends: the same category too
        assert again.category == first.category


def test_contract_batch_keeps_order_and_fails_closed(judge: Judge) -> None:
    """An item the model cannot take gives status=error (never an exception), in place."""
    outs = judge.judge_batch([HUGE, BENIGN])
    assert len(outs) == 2
    if isinstance(judge, ReferenceJudge):
        assert outs[0].status == Status.OK
    elif isinstance(judge, ProbeJudge):  # reads a bounded window, like the probes, and says so
        assert outs[0].status == Status.OK and "first" in outs[0].rationale
    else:
        assert outs[0].status == Status.ERROR and outs[0].error
        assert outs[0].violation == 0.0 and outs[0].category is None
    assert outs[1].status == Status.OK
    # the probe judge decodes a batch's sequences together in one llama.cpp KV cache, whose
    # size changes the accumulation order: the same item differs in rounding by its neighbours
    # (AVX2 build, 0.5B wiring model, random probe: 0.7115 alone, 0.7035 next to HUGE,
    # 0.7082 / 0.7049 for the same item in two positions); a single call is bit-stable
    # (test_contract_deterministic)
    tol = 1e-2 if isinstance(judge, ProbeJudge) else _tol(judge)
    assert outs[1].violation == pytest.approx(_first(judge).violation, abs=tol)


# -- backend-specific parts of the contract ------------------------------------------------


@pytest.mark.models
def test_llamacpp_prefix_cache_same_answer_fewer_evaluated_tokens(
    llama_judge: LlamaCppJudge,
) -> None:
    cold = llama_judge.judge_with(BENIGN, use_cache=False)
    warm = llama_judge.judge_with(BENIGN, use_cache=True)
    assert cold.status == warm.status == Status.OK
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == len(llama_judge._head) > 500  # the whole system part
    assert warm.prompt_tokens == cold.prompt_tokens
    assert warm.violation == pytest.approx(cold.violation, abs=2e-3)


@pytest.mark.models
def test_llamacpp_long_message_is_judged_in_windows(llama_judge: LlamaCppJudge) -> None:
    """A benign message longer than the context is judged in windows (no error), and the
    answer is the highest window's: the same scores as judging each window alone."""
    from childguard.models.judge import item_windows

    budget = llama_judge._n_ctx - llama_judge.policy.spec.judge.max_tokens - 64
    room = budget - llama_judge._prompt_tokens(JudgeInput(item_id="x", text="a"))
    sentence = "The library opens at nine and the reading group meets on Tuesdays. "
    per = len(llama_judge._tok(sentence))
    long = JudgeInput(item_id="long", text=sentence * (room * 3 // (2 * per)))  # 1.5x the room
    assert llama_judge._prompt_tokens(long) > budget
    out = llama_judge.judge(long)
    assert out.status == Status.OK, out.error
    assert "judged in 2 overlapping windows" in out.rationale
    alone = [llama_judge.judge(w) for w in item_windows(long, 2)]
    assert out.violation == pytest.approx(max(a.violation for a in alone), abs=2e-3)
    for code, score in out.category_scores.items():
        assert score == pytest.approx(max(a.category_scores[code] for a in alone), abs=2e-3)
    assert out.prompt_tokens == sum(a.prompt_tokens for a in alone) > budget


@pytest.mark.models
def test_llamacpp_item_control_tokens_stay_text(llama_judge: LlamaCppJudge) -> None:
    im_end = llama_judge.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert len(im_end) == 1
    item_tokens = llama_judge._tok("hello <|im_end|> world")
    assert im_end[0] not in item_tokens


@pytest.mark.models
def test_llamacpp_per_category_mode(weights_settings: Settings, judge_policy: Policy,
                                    llama_judge: LlamaCppJudge) -> None:
    per_cat = dataclasses.replace(judge_policy, spec=judge_policy.spec.model_copy(
        update={"judge": JudgeConfig(mode="per_category")}))
    llama_judge.policy = per_cat
    try:
        out = llama_judge.judge(JudgeInput(item_id="q", text="What time is practice?"))
    finally:
        llama_judge.policy = judge_policy
    assert out.status == Status.OK, out.error
    assert set(out.category_scores) == set(judge_policy.spec.codes)
    assert out.violation == pytest.approx(max(out.category_scores.values()))
    # later questions reuse the cached system prefix and the item
    assert out.cached_tokens > out.prompt_tokens // 2


@pytest.mark.models
@pytest.mark.integration
def test_openai_truncated_answer_is_an_error(llama_server: str, judge_policy: Policy) -> None:
    """A server answer that is not valid schema JSON (cut at max_tokens) -> status=error."""
    tiny = dataclasses.replace(judge_policy, spec=judge_policy.spec.model_copy(
        update={"judge": JudgeConfig(max_tokens=3)}))
    j = OpenAICompatibleJudge(llama_server, weights.WIRING_0_5B, tiny, timeout_s=600)
    try:
        out = j.judge(JudgeInput(item_id="t", text="What time is practice?"))
    finally:
        j.close()
    assert out.status == Status.ERROR and "JSON" in (out.error or "")


def test_openai_unreachable_server_is_an_error(judge_policy: Policy) -> None:
    j = OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", judge_policy, timeout_s=2)
    out = j.judge(BENIGN)
    assert out.status == Status.ERROR and "unreachable" in (out.error or "")
