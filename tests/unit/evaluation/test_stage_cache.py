"""The evaluation stage cache: hits replay the same answers, keys change with what changes an
answer (prompt, model, settings), errors are retried, nothing of the text is stored, and a
second eval run replays every judge call."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from childguard.evaluation.datasets import EvalDataset, EvalItem
from childguard.evaluation.runner import RunOptions, evaluate
from childguard.evaluation.stage_cache import CachedEmbedder, CachedJudge, StageCache
from childguard.models.base import Judge, JudgeInput, JudgeOutput, TextEmbedder
from childguard.models.reference import ReferenceJudge
from childguard.policy import load_policy
from childguard.schema import Status
from childguard.settings import JudgeSettings, Settings

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "policies" / "child_safety"
SECRET = "zebra-quartz-umbrella"


class CountingJudge(Judge):
    """A reference judge that counts its calls and quotes the item in its rationale."""

    name = "counting"

    def __init__(self, inner: ReferenceJudge) -> None:
        self.inner = inner
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: object, policy: object) -> Judge:
        raise NotImplementedError

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.calls += 1
        out = self.inner.judge(item)
        return out.model_copy(update={"rationale": f"the item says {item.text}"})


class CountingEmbedder(TextEmbedder):
    name = "counting-embedder"
    dim = 4

    def __init__(self) -> None:
        self.texts: list[str] = []

    @property
    def model_version(self) -> str:
        return "counting@1"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        out = np.array([[len(t), t.count("a"), 1.0, 2.0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _item(text: str, item_id: str = "x") -> JudgeInput:
    return JudgeInput(item_id=item_id, text=text, normalized=text.lower())


def test_judge_answers_replay_and_keys_follow_the_prompt(tmp_path: Path) -> None:
    policy = load_policy(POLICY)
    cache = StageCache(tmp_path / "c.sqlite")
    inner = CountingJudge(ReferenceJudge(policy))
    judge = CachedJudge(inner, cache, policy, JudgeSettings())
    first = judge.judge_batch([_item(f"hello {SECRET} one"), _item("cg-test:grooming two")])
    assert inner.calls == 2
    # same prompt under another id: a hit (the id is not part of what the judge reads)
    again = judge.judge_batch([_item(f"hello {SECRET} one", "y"),
                               _item("cg-test:grooming two", "z")])
    assert inner.calls == 2
    assert [o.category_scores for o in again] == [o.category_scores for o in first]
    assert cache.stats() == {"cache.judge.hits": 2.0, "cache.judge.misses": 2.0}
    # another text, other judge settings, another model version: misses
    judge.judge(_item("something else"))
    assert inner.calls == 3
    other = CachedJudge(inner, cache, policy, JudgeSettings(n_ctx=2048))
    other.judge(_item(f"hello {SECRET} one"))
    assert inner.calls == 4
    # settings that cannot change an answer do not change the key
    CachedJudge(inner, cache, policy, JudgeSettings(timeout_s=99.0)).judge(
        _item(f"hello {SECRET} one"))
    assert inner.calls == 4
    # how the answer is combined (combine, stacker weights) is not part of the key
    from childguard.policy import StackWeights

    stacked = dataclasses.replace(policy, spec=policy.spec.model_copy(update={
        "judge": policy.spec.judge.model_copy(update={
            "combine": "stacked", "stacker": {"grooming": StackWeights(bias=0, probe=1,
                                                                       judge=1)}})}))
    CachedJudge(inner, cache, stacked, JudgeSettings()).judge(_item(f"hello {SECRET} one"))
    assert inner.calls == 4
    # the replayed answer carries the recorded time, for the run's latency metrics
    cache.take_replayed_ms()
    judge.judge(_item("something else"))
    assert cache.take_replayed_ms() > 0.0


def test_a_changed_prompt_misses(tmp_path: Path, policy_copy: Path) -> None:
    cache = StageCache(tmp_path / "c.sqlite")
    policy = load_policy(POLICY)
    inner = CountingJudge(ReferenceJudge(policy))
    CachedJudge(inner, cache, policy, JudgeSettings()).judge(_item("same text"))
    prompt = policy_copy / "prompt.md"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace(
        "## Rules\n", "## Rules\n- An extra rule line.\n", 1), encoding="utf-8")
    changed = load_policy(policy_copy)
    CachedJudge(inner, cache, changed, JudgeSettings()).judge(_item("same text"))
    assert inner.calls == 2


def test_errors_are_not_stored_and_no_text_is(tmp_path: Path) -> None:
    policy = load_policy(POLICY)
    path = tmp_path / "c.sqlite"
    cache = StageCache(path)
    inner = CountingJudge(ReferenceJudge(policy))
    judge = CachedJudge(inner, cache, policy, JudgeSettings())
    from childguard.models.reference import ERROR_MARKER

    bad = _item(f"text with {ERROR_MARKER}")
    assert judge.judge(bad).status is Status.ERROR
    assert judge.judge(bad).status is Status.ERROR
    assert inner.calls == 2  # retried, not replayed
    judge.judge(_item(f"a message about {SECRET} here"))
    cache.close()
    raw = b"".join(bytes(v) for (v,) in sqlite3.connect(path).execute(
        "SELECT value FROM entries"))
    assert SECRET.encode() not in raw
    assert b"the item says" in raw  # the rationale is kept, with the item's words masked


def test_embeddings_replay(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "c.sqlite")
    inner = CountingEmbedder()
    emb = CachedEmbedder(inner, cache)
    assert emb.model_version == inner.model_version and emb.dim == 4
    a = emb.embed_texts(["alpha", "beta", "alpha"])
    b = emb.embed_texts(["beta", "gamma", "alpha"])
    assert inner.texts == ["alpha", "beta", "gamma"]  # a text repeated in one call: once
    np.testing.assert_allclose(a[0], b[2])
    np.testing.assert_allclose(a[1], b[0])
    np.testing.assert_allclose(a[0], a[2])
    assert emb.embed_texts([]).shape == (0, 4)


class SlowEmbedder(CountingEmbedder):
    """Takes 30 ms per call whatever its size, so a batch's mean per text is not an item's cost."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.03)
        return super().embed_texts(texts)


def test_a_bulk_embedding_is_measured_again_when_an_item_uses_it(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "c.sqlite")
    inner = SlowEmbedder()
    emb = CachedEmbedder(inner, cache)
    texts = [f"training text {i}" for i in range(10)]
    bulk = emb.embed_bulk(texts)  # one 30 ms call for ten texts: 3 ms each if averaged
    assert cache.take_replayed_ms() == 0.0
    one = emb.embed_texts([texts[3]])  # an item's call: embedded again, alone, and timed
    assert inner.texts[-1] == texts[3] and len(inner.texts) == 11
    np.testing.assert_allclose(one[0], bulk[3])
    assert cache.take_replayed_ms() == 0.0  # measured now, not replayed
    again = emb.embed_texts([texts[3]])  # replayed, with the time measured alone
    assert len(inner.texts) == 11
    np.testing.assert_allclose(again[0], bulk[3])
    assert cache.take_replayed_ms() >= 25.0
    emb.embed_bulk(texts)  # bulk reads every vector, measured or not, and embeds nothing
    assert len(inner.texts) == 11 and cache.take_replayed_ms() == 0.0


def _tiny_set() -> EvalDataset:
    items = tuple(
        EvalItem(id=f"t{i}", text=text, labels={"grooming": int("cg-test" in text)},
                 split="test")
        for i, text in enumerate([
            "cg-test:grooming see you after school", "a recipe for bread",
            "cg-test:grooming again", "the weather is nice", "homework help please",
            "cg-test:grooming a third", "football scores", "a book review",
        ]))
    return EvalDataset("tiny", items, source="test")


def test_second_run_replays_every_judge_call(settings: Settings) -> None:
    sets = [_tiny_set()]
    opts = RunOptions(judge="reference", gate=False, calibration=False, progress=False)
    cold = evaluate(settings, sets, options=opts, log=False)
    assert cold.metrics["cache.judge.misses"] == 8
    warm = evaluate(settings, sets, options=opts, log=False)
    assert warm.metrics["cache.judge.hits"] == 8
    assert warm.metrics.get("cache.judge.misses", 0) == 0
    assert [(p.id, p.scores, p.decision) for p in warm.predictions] == \
        [(p.id, p.scores, p.decision) for p in cold.predictions]
    # shards fill the same cache; with the cache off every item is judged again
    shard = evaluate(settings, sets, options=RunOptions(
        judge="reference", gate=False, calibration=False, progress=False, shard=(2, 3)),
        log=False)
    assert [p.id for p in shard.predictions] == ["t1", "t4", "t7"]
    assert shard.metrics["cache.judge.hits"] == 3
    off = evaluate(settings, sets, options=RunOptions(
        judge="reference", gate=False, calibration=False, progress=False, cache=False),
        log=False)
    assert "cache.judge.hits" not in off.metrics


def test_shard_bounds() -> None:
    from childguard.errors import UserError

    with pytest.raises(UserError, match="1 <= K <= N"):
        _tiny_set().shard(4, 3)
