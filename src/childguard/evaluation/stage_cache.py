"""A content-addressed cache of the expensive stage outputs of evaluation runs.

Why: one judged evaluation of the three default sets costs hours of this machine's two cores,
almost all of it in the LLM judge and the text encoder. Their outputs depend only on the model,
its settings, the prompt and the item, never on the gate bar, the combiner, the thresholds or
the calibration, which are what most experiments change. So an eval run wraps its judge and its
text embedder with the classes below: an output already computed under the same key is read
back, only misses run the model, and each answer is written as soon as it exists, which makes a
killed run resumable and lets big jobs run in chunks (`eval run --shard K/N`) that fill the
cache for one replay of everything.

Keys are sha256 digests of (stage, component version, the settings that change its output, the
rendered prompt or the text). The cache holds digests, vectors and the judge's scores with its
rationale redacted against the item's own text; never the item's text. Errors are not cached
(a timed-out call is retried next time). The service never uses this cache: a live verdict is
always computed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from childguard.models.base import Judge, JudgeInput, JudgeOutput, TextEmbedder
from childguard.policy import Policy
from childguard.schema import Status
from childguard.settings import JudgeSettings

#: bump when the stored format of a stage changes; old entries are then simply never hit
FORMAT = "1"

#: judge settings that cannot change an answer (where and how long to wait, how many threads)
_JUDGE_SETTINGS_IGNORED = {"url", "api_key", "timeout_s", "threads", "feature_cache_dir",
                           "prefix_cache"}


#: policy judge settings that do not change the judge's answer (only what is done with it)
_JUDGING_IGNORED = {"combine", "stacker"}


def digest(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON."""
    raw = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                     default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class StageCache:
    """Key -> bytes per stage, in one SQLite file (WAL: a second process may read or write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (stage TEXT NOT NULL, key TEXT NOT NULL, "
            "value BLOB NOT NULL, created REAL NOT NULL, PRIMARY KEY (stage, key))")
        self._db.commit()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self._replayed_ms = 0.0

    def add_replayed(self, ms: float) -> None:
        """Record what a cache hit saved (the original call's time), so the run's latency
        metrics still measure the service's cost, not the replay's."""
        with self._lock:
            self._replayed_ms += ms

    def take_replayed_ms(self) -> float:
        """The time saved since the last call (the runner adds it to an item's latency)."""
        with self._lock:
            ms, self._replayed_ms = self._replayed_ms, 0.0
        return ms

    def get_many(self, stage: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM entries WHERE stage = ? AND key IN ({marks})",
                    (stage, *chunk)).fetchall()
                found.update({k: bytes(v) for k, v in rows})
        for k in keys:
            (self.hits if k in found else self.misses)[stage] += 1
        return found

    def put_many(self, stage: str, items: dict[str, bytes]) -> None:
        if not items:
            return
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries (stage, key, value, created) VALUES (?, ?, ?, ?)",
                [(stage, k, v, now) for k, v in items.items()])
            self._db.commit()

    def count(self, stage: str | None = None) -> int:
        with self._lock:
            if stage is None:
                return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM entries WHERE stage = ?",
                                        (stage,)).fetchone()[0])

    def stats(self) -> dict[str, float]:
        """`cache.<stage>.hits` / `.misses` of this process, for the run's metrics."""
        out: dict[str, float] = {}
        for stage in sorted(set(self.hits) | set(self.misses)):
            out[f"cache.{stage}.hits"] = float(self.hits[stage])
            out[f"cache.{stage}.misses"] = float(self.misses[stage])
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedEmbedder(TextEmbedder):
    """The same embedder (same name, dimension and version), its vectors read from the cache
    where the same model already embedded the same text.

    Each vector is stored with the time it cost, which a replay adds to the item's latency.
    `embed_texts` is the pipeline's call for one item (its text, windows, conversation), so its
    time per text is that item's. `embed_bulk` (probe training, thousands of texts in batches)
    stores no time: a batch's mean is not any item's cost (long texts dominate it; the OpenAI
    set's "p50" read 437-598 ms that way, its median text costs ~170 ms alone), so the first
    `embed_texts` of such a text embeds it again, alone, and stores what that took."""

    stage = "embed"

    def __init__(self, inner: TextEmbedder, cache: StageCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = getattr(inner, "name", type(inner).__name__)  # type: ignore[misc]
        self.dim = inner.dim

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    def __getattr__(self, name: str) -> Any:  # anything else the pipeline asks of the model
        return getattr(self.inner, name)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, timed=True)

    def embed_bulk(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for many items at once (training); their per-item time is left unmeasured."""
        return self._embed(texts, timed=False)

    def _embed(self, texts: Sequence[str], *, timed: bool) -> np.ndarray:
        version = self.inner.model_version
        keys = [digest(FORMAT, self.stage, version, t) for t in texts]
        found = self.cache.get_many(self.stage, keys)
        vecs: dict[str, np.ndarray] = {}
        for k, v in found.items():  # stored: [elapsed ms per text or NaN, *vector] as float32
            arr = np.frombuffer(v, dtype=np.float32)
            if timed and np.isnan(arr[0]):
                continue  # embedded in bulk: embed it again below to measure it
            vecs[k] = arr[1:]
            if timed:
                self.cache.add_replayed(float(arr[0]))
        missing = list(dict.fromkeys(k for k in keys if k not in vecs))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))  # a key is one text's digest
            t0 = time.perf_counter()
            fresh = np.asarray(self.inner.embed_texts([text_of[k] for k in missing]),
                               dtype=np.float32)
            each = np.float32((time.perf_counter() - t0) * 1000 / len(missing)) if timed \
                else np.float32("nan")
            new = {k: fresh[j] for j, k in enumerate(missing)}
            self.cache.put_many(self.stage, {k: np.concatenate([[each], v]).astype(
                np.float32).tobytes() for k, v in new.items()})
            vecs.update(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([vecs[k] for k in keys]).astype(np.float32)


class CachedJudge(Judge):
    """The same judge, its answers read from the cache where the same model, settings and
    policy judgement (mode, questions, answer schema) already answered the same rendered
    prompt. Answers with status error are returned but not stored."""

    name = "cached"
    stage = "judge"

    def __init__(self, inner: Judge, cache: StageCache, policy: Policy,
                 settings: JudgeSettings) -> None:
        self.inner = inner
        self.cache = cache
        self.policy = policy
        self._settings = settings.model_dump(mode="json", exclude=_JUDGE_SETTINGS_IGNORED)
        # how the judge is asked (mode, token budget), not how its answer is combined
        self._judging = policy.spec.judge.model_dump(mode="json", exclude=_JUDGING_IGNORED)
        self._codes = list(policy.spec.codes)

    @classmethod
    def from_settings(cls, settings: Any, policy: Policy) -> Judge:
        raise TypeError("CachedJudge wraps a built judge; it is not built from settings")

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    def __getattr__(self, name: str) -> Any:  # use_probes, embedder, ... of the wrapped judge
        return getattr(self.inner, name)

    def key(self, item: JudgeInput) -> str:
        from childguard.models.judge import render_item

        rendered = render_item(self.policy, item)
        return digest(FORMAT, self.stage, self.inner.model_version, self._settings,
                      self._judging, self._codes, rendered.system, rendered.user)

    def judge(self, item: JudgeInput) -> JudgeOutput:
        return self.judge_batch([item])[0]

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        keys = [self.key(it) for it in items]
        found = self.cache.get_many(self.stage, keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        outs: dict[int, JudgeOutput] = {}
        for i, k in enumerate(keys):
            if k in found:
                outs[i] = JudgeOutput.model_validate_json(found[k])
                self.cache.add_replayed(outs[i].elapsed_ms)
        if missing:
            todo = [items[i] for i in missing]
            t0 = time.perf_counter()
            fresh = ([self.inner.judge(todo[0])] if len(todo) == 1
                     else self.inner.judge_batch(todo))
            each = (time.perf_counter() - t0) * 1000 / len(todo)
            if len(fresh) != len(todo):
                raise RuntimeError(f"judge returned {len(fresh)} answers for {len(todo)} items")
            store: dict[str, bytes] = {}
            for i, out in zip(missing, fresh, strict=True):
                outs[i] = out
                if out.status is Status.OK:  # stored with the call's wall time, for replay
                    kept = _redacted(out, items[i]).model_copy(
                        update={"elapsed_ms": max(out.elapsed_ms, each)})
                    store[keys[i]] = kept.model_dump_json().encode()
            self.cache.put_many(self.stage, store)
        return [outs[i] for i in range(len(items))]

    def close(self) -> None:
        self.inner.close()


def _redacted(out: JudgeOutput, item: JudgeInput) -> JudgeOutput:
    """The answer as stored: the rationale with any run of the item's words masked."""
    from childguard.pipeline import Redactor

    redact = Redactor([item.text, item.normalized, item.ocr_text,
                       *(m.text for m in item.context)])
    return out.model_copy(update={"rationale": redact(out.rationale)})


def cache_path(home: Path) -> Path:
    return home / "eval_cache" / "stages.sqlite"


def attach(pipeline: Any, cache: StageCache, policy: Policy, judge_settings: JudgeSettings
           ) -> None:
    """Put the cache in front of a pipeline's text embedder and judge (where it has them)."""
    embedder = getattr(pipeline, "text_embedder", None)
    if embedder is not None and not isinstance(embedder, CachedEmbedder):
        pipeline.text_embedder = CachedEmbedder(embedder, cache)
    judge = getattr(pipeline, "judge", None)
    if judge is not None and not isinstance(judge, CachedJudge):
        pipeline.judge = CachedJudge(judge, cache, policy, judge_settings)
