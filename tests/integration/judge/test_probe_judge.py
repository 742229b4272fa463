"""The judge model's hidden state (llama.cpp embeddings) and the probe judge built on it.

Real llama.cpp with the packaged 0.5B wiring model: these tests check the mechanics (shared
prompt head, batching, control tokens, the vector cache, the judge's answers, probes trained and
cross-fitted inside an eval run), never label quality, which docs/quality.md measures with the
1.5B judge. Probe weights here are random or trained on neutral synthetic items: wiring only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from childguard.errors import ModelUnavailable
from childguard.evaluation.datasets import EvalDataset, EvalItem
from childguard.evaluation.runner import RunOptions, evaluate
from childguard.models import weights
from childguard.models.base import JudgeInput
from childguard.models.hidden_state import TEMPLATE_VERSION, LlamaHiddenEmbedder
from childguard.models.judge_probe import ProbeJudge, judge_text
from childguard.models.probes import CategoryProbe, ProbeSet
from childguard.policy import Policy
from childguard.schema import Message, Status
from childguard.settings import Settings

pytestmark = pytest.mark.models

TEXTS = ["what time is practice on saturday?", "can you recommend a banana bread recipe",
         "what time is practice on saturday?"]


@pytest.fixture(scope="module")
def wiring_gguf(judge_gguf: Callable[[str], Path]) -> Path:
    return judge_gguf(weights.WIRING_0_5B)


@pytest.fixture(scope="module")
def embedder(wiring_gguf: Path) -> Iterator[LlamaHiddenEmbedder]:
    e = LlamaHiddenEmbedder(wiring_gguf, model_name=weights.WIRING_0_5B,
                            checksum=weights.spec(weights.WIRING_0_5B).sha256)
    yield e
    e.close()


def _random_probes(dim: int, codes: tuple[str, ...], seed: int = 0) -> ProbeSet:
    rng = np.random.default_rng(seed)
    probes = {c: CategoryProbe(weights=rng.normal(size=(2, dim)), bias=np.zeros(2),
                               platt_a=np.full(2, -1.0), platt_b=np.zeros(2)) for c in codes}
    return ProbeSet(embedder="test", dim=dim, probes=probes)


def _probe_judge_settings(base: Settings, home: Path) -> Settings:
    """A private home, the pulled weights, the probe judge on the wiring model."""
    return base.model_copy(update={
        "home": home,
        "models": base.models.model_copy(update={"cache_dir": base.models_dir}),
        "judge": base.judge.model_copy(
            update={"backend": "llm_probe", "model": weights.WIRING_0_5B}),
    })


def test_rows_are_unit_deterministic_and_batch_invariant(embedder: LlamaHiddenEmbedder) -> None:
    batch = embedder.embed_texts(TEXTS)
    assert batch.shape == (3, embedder.dim) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    singles = np.vstack([embedder.embed_texts([t]) for t in TEXTS])
    # the same prompt alone or packed with others (and after the shared head is cached)
    assert np.all(np.sum(batch * singles, axis=1) > 0.999)
    assert float(batch[0] @ batch[2]) > 0.999
    assert float(batch[0] @ batch[1]) < float(batch[0] @ batch[2]) - 1e-3  # texts differ
    assert embedder.embed_texts([]).shape == (0, embedder.dim)


def test_shared_head_gives_the_full_prompts_hidden_state(embedder: LlamaHiddenEmbedder) -> None:
    """The head decoded once and shared must equal decoding each whole prompt on its own."""
    import llama_cpp

    shared = embedder.embed_texts(TEXTS[:2])
    ctx = embedder.llm._ctx
    full = []
    for text in TEXTS[:2]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx.ctx), True)
        embedder._fill([(0, 0, embedder.tokens(text))])
        ctx.decode(embedder.llm._batch)
        v = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(ctx.ctx, 0),
                                  shape=(embedder.dim,)).copy()
        full.append(v / np.linalg.norm(v))
    embedder._head_ready = False  # the cache was cleared above: decode the head again
    assert np.all(np.sum(shared * np.vstack(full), axis=1) > 0.999)
    again = embedder.embed_texts(TEXTS[:2])
    assert np.all(np.sum(again * shared, axis=1) > 0.9999)


def test_control_tokens_in_the_item_stay_text(embedder: LlamaHiddenEmbedder) -> None:
    im_end = embedder.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert len(im_end) == 1
    frame = embedder.tokens("").count(im_end[0])
    assert embedder.tokens("hello <|im_end|> world").count(im_end[0]) == frame


def test_long_items_are_cut_and_say_so(embedder: LlamaHiddenEmbedder) -> None:
    n, cached, cut = embedder.prompt_size("word " * 2000)
    assert cut and n == len(embedder.tokens("word " * 2000)) and cached == len(embedder._head)
    assert embedder.prompt_size("hello")[2] is False
    assert embedder.model_version.startswith(f"{weights.WIRING_0_5B}+{TEMPLATE_VERSION}@")


def test_cache_serves_vectors_and_holds_no_text(wiring_gguf: Path, tmp_path: Path,
                                                embedder: LlamaHiddenEmbedder) -> None:
    e = LlamaHiddenEmbedder(wiring_gguf, model_name=weights.WIRING_0_5B,
                            checksum=weights.spec(weights.WIRING_0_5B).sha256,
                            cache_dir=tmp_path)
    try:
        first = e.embed_texts(TEXTS[:2])

        def refuse(_: list[list[int]]) -> list[np.ndarray]:
            raise AssertionError("a cached text was decoded again")

        e._decode = refuse  # type: ignore[method-assign]
        assert np.array_equal(e.embed_texts(TEXTS[:2]), first)
    finally:
        e.close()
    files = sorted(tmp_path.rglob("*"))
    stored = [p for p in files if p.is_file()]
    assert len(stored) == 2 and all(p.suffix == ".npy" for p in stored)
    assert all(e.model_version in str(p) for p in stored)  # probes of another model never read
    for p in stored:
        raw = p.read_bytes()
        assert not any(w.encode() in raw for w in ("practice", "banana"))


def test_probe_judge_answers_with_scores_and_a_readable_rationale(
        embedder: LlamaHiddenEmbedder, judge_policy: Policy) -> None:
    codes = judge_policy.spec.codes
    judge = ProbeJudge(judge_policy, embedder, _random_probes(embedder.dim, codes))
    item = JudgeInput(item_id="a", text="What time is practice?", normalized="what time is "
                      "practice?", context=(Message(author="other", text="See you there"),))
    out = judge.judge(item)
    assert out.status is Status.OK, out.error
    assert set(out.category_scores) == set(codes)
    assert out.violation == pytest.approx(max(out.category_scores.values()))
    assert (out.category is not None) == (out.violation >= 0.5)
    assert out.prompt_tokens > out.cached_tokens == len(embedder._head)
    assert "judge model" in out.rationale and "practice" not in out.rationale.lower()
    names = [judge_policy.spec.category(c).name for c in codes]
    assert any(n in out.rationale for n in names)
    assert out.model == judge.model_version and "probes:test:" in out.model
    # what it reads: the normalised text after the recent context, as the probes were trained
    assert judge_text(item, 3) == "See you there\nwhat time is practice?"
    batch = judge.judge_batch([item, JudgeInput(item_id="img", has_image=True)])
    assert batch[0].violation == pytest.approx(out.violation, abs=1e-3)
    assert batch[1].status is Status.ERROR and "no" in (batch[1].error or "")  # fail closed


def test_probe_judge_without_probes_fails_closed_or_refuses_to_start(
        embedder: LlamaHiddenEmbedder, judge_policy: Policy, tmp_path: Path,
        weights_settings: Settings) -> None:
    untrained = ProbeJudge(judge_policy, embedder, None)
    out = untrained.judge(JudgeInput(item_id="a", text="hello"))
    assert out.status is Status.ERROR and "no trained probes" in (out.error or "")
    with pytest.raises(ModelUnavailable, match=f"expect {embedder.dim + 1}-d"):
        untrained.use_probes(_random_probes(embedder.dim + 1, judge_policy.spec.codes))
    s = _probe_judge_settings(weights_settings, tmp_path)
    with pytest.raises(ModelUnavailable, match="--judge-features"):
        ProbeJudge.from_settings(s, judge_policy)


def test_eval_run_trains_and_cross_fits_the_judges_probes(
        judge_policy: Policy, tmp_path: Path, weights_settings: Settings) -> None:
    """`--judge llm_probe --train-probes SET --cross-fit 2`: the probe judge's probes are
    trained in the run on the judge model's features and every item is judged out of fold."""
    items = tuple(
        EvalItem(id=f"s{i}", text=f"synthetic item {i} about the weekend plans",
                 labels={"grooming": int(i % 3 == 0)}) for i in range(24))
    ds = EvalDataset(name="wiring", items=items, source="test")
    s = _probe_judge_settings(weights_settings, tmp_path)
    res = evaluate(s, [ds], policy=judge_policy, log=False,
                   options=RunOptions(probe_train=(ds,), cross_fit=2, gate=False,
                                      calibration=False, progress=False))
    assert len(res.predictions) == 24
    assert all(p.judged and p.status == "ok" for p in res.predictions)
    assert all("grooming" in (p.extra.get("judge") or {}) for p in res.predictions)
    # the hidden states were cached under the run's home (vectors only) for the next run
    assert list((tmp_path / "cache" / "judge-features").rglob("*.npy"))
