"""The cascade: the one sequence of stages both hosts run, with its fail-closed rules.

Why one function: the in-process host (CLI, evaluation) and the Ray Serve host used to carry
their own copies of this sequence, and they drifted (a judge call after a failed signal
stage, other timings and versions). Now a host supplies only a `StageRunner`: how a stage is
called (a local worker thread, or a Ray deployment handle) and how it is bounded in time.
What runs, in which order, and what a failure means is decided here:

1. hash matching for every item; a decisive hit or a failed hash stage skips the models;
2. the signal stage and the gate (`Pipeline.signals_and_gate`) for the rest; an item whose
   signals or a detector failed gets no gate result and no judge call;
3. the judge for items the gate did not settle (when the host has a judge);
4. `decide` for every item: any failed stage gives review, never allow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from childguard.pipeline.redaction import timeout_error
from childguard.pipeline.results import (
    GateResult,
    HashResult,
    JudgeResult,
    PreparedItem,
    SignalResult,
    StageResult,
    ms_since,
    stage_exception,
)
from childguard.schema import Status, Verdict

__all__ = ["LocalRunner", "LocalStages", "StageRunner", "needs_judge", "needs_signals",
           "run_cascade", "run_sync"]

log = logging.getLogger("childguard.pipeline")

_R = TypeVar("_R", bound=StageResult)
_T = TypeVar("_T")


class StageRunner(Protocol):
    """How a host runs the stages. Each method answers for every item it is given, in order,
    and never raises: a stage that fails or times out yields its `failed()` result."""

    @property
    def has_judge(self) -> bool: ...

    async def hash(self, items: Sequence[PreparedItem]) -> list[HashResult]: ...

    async def signals(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]: ...

    async def judge(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult]
    ) -> list[JudgeResult]: ...


Decide = Callable[..., Verdict]


def needs_signals(hashes: HashResult) -> bool:
    """The models run unless a hash hit settled the item or the hash stage failed."""
    return (hashes.ok or hashes.status is Status.SKIPPED) and hashes.decisive is None


def needs_judge(gate: GateResult | None) -> bool:
    """The judge reads what the gate did not settle; no gate result (failed signals) or a
    failed gate sends the item to review without a judge call."""
    return gate is not None and gate.ok and not gate.allowed


async def run_cascade(items: Sequence[PreparedItem], runner: StageRunner,
                      decide: Decide) -> list[Verdict]:
    """Stages 1-5 for prepared items, on whichever host `runner` stands for."""
    n = len(items)
    timings: list[dict[str, float]] = [{"prepare": it.prepare_ms} for it in items]
    hashes = await runner.hash(items)
    for t, h in zip(timings, hashes, strict=True):
        if h.status is not Status.SKIPPED:
            t["hash"] = h.elapsed_ms
    todo = [i for i in range(n) if needs_signals(hashes[i])]
    signals: dict[int, SignalResult] = {}
    gates: dict[int, GateResult] = {}
    if todo:
        got = await runner.signals([items[i] for i in todo])
        for i, (s, g) in zip(todo, got, strict=True):
            signals[i] = s
            timings[i]["signals"] = s.elapsed_ms
            if g is not None:
                gates[i] = g
                timings[i]["gate"] = g.elapsed_ms
    to_judge = [i for i in todo if needs_judge(gates.get(i))]
    judged: dict[int, JudgeResult] = {}
    if to_judge and runner.has_judge:
        got_j = await runner.judge([items[i] for i in to_judge], [signals[i] for i in to_judge])
        for i, jr in zip(to_judge, got_j, strict=True):
            judged[i] = jr
            timings[i]["judge"] = jr.elapsed_ms
    return [
        decide(it, hashes=hashes[i], signals=signals.get(i), gate=gates.get(i),
               judge=judged.get(i), timings=timings[i])
        for i, it in enumerate(items)
    ]


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from synchronous code; from a thread whose event loop is
    running (an async caller of the sync API), on a helper thread instead of failing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="childguard-sync") as ex:
        return ex.submit(asyncio.run, coro).result()


class LocalStages(Protocol):
    """What the in-process runner needs of `Pipeline`."""

    stage_timeout_s: float

    @property
    def judge(self) -> object | None: ...

    def executor(self) -> concurrent.futures.ThreadPoolExecutor: ...

    def hash_stage(self, item: PreparedItem) -> HashResult: ...

    def signals_and_gate(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]: ...

    def judge_stage_batch(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult | None]
    ) -> list[JudgeResult]: ...


class LocalRunner:
    """The in-process host: each stage call on a worker thread, bounded by the stage timeout
    scaled by the batch size. A timeout fails every item of the call (closed); the worker is
    left to finish (the pipeline's model locks keep the next call out of a busy model)."""

    def __init__(self, stages: LocalStages) -> None:
        self.stages = stages

    @property
    def has_judge(self) -> bool:
        return self.stages.judge is not None

    async def hash(self, items: Sequence[PreparedItem]) -> list[HashResult]:
        # one bounded call per item, as each image is hashed on its own
        out: list[HashResult] = []
        for it in items:
            out += await self._bounded(
                "hash", HashResult, lambda its: [self.stages.hash_stage(its[0])], [it], _same)
        return out

    async def signals(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]:
        return await self._bounded("signals", SignalResult, self.stages.signals_and_gate,
                                   items, _no_gate)

    async def judge(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult]
    ) -> list[JudgeResult]:
        return await self._bounded(
            "judge", JudgeResult, lambda its: self.stages.judge_stage_batch(its, signals), items,
            _same)

    async def _bounded(
        self, stage: str, kind: type[_R], fn: Callable[[list[PreparedItem]], list[_T]],
        items: Sequence[PreparedItem], failed: Callable[[_R], _T],
    ) -> list[_T]:
        """`fn(items)` on a worker thread; on a timeout or an exception every item gets
        `failed(kind.failed(...))`."""
        items = list(items)
        timeout = self.stages.stage_timeout_s * max(1, len(items))
        t0 = time.perf_counter()
        fut = self.stages.executor().submit(fn, items)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=timeout)
        except TimeoutError:
            fut.cancel()
            elapsed = ms_since(t0) / max(1, len(items))
            error = timeout_error(timeout)
            for it in items:
                log.warning("stage %s timed out for item %s: %s", stage, it.item_id, error)
            return [failed(kind.failed(error, elapsed)) for _ in items]
        except Exception as exc:  # a stage method broke its never-raise promise
            elapsed = ms_since(t0) / max(1, len(items))
            return [failed(stage_exception(kind, it, exc, None, elapsed)) for it in items]


def _same(result: _R) -> _R:
    return result


def _no_gate(result: SignalResult) -> tuple[SignalResult, GateResult | None]:
    return result, None
