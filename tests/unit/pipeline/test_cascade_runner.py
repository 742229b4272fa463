"""The shared cascade (`pipeline.cascade`): what it asks a host's stage runner for, and when.

The Ray host is held to the same verdicts by tests/integration/serving/test_host_contract.py;
here a recording runner shows the order and the fail-closed rules without any host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pipeline_support import FakeHashCheck, bank_match, png_bytes, probe_marker

from childguard.models.reference_signals import ReferenceImageSafety
from childguard.pipeline import (
    GateResult,
    HashResult,
    JudgeResult,
    Pipeline,
    PreparedItem,
    SignalResult,
    run_cascade,
)
from childguard.pipeline.cascade import LocalRunner
from childguard.schema import ContentItem, Decision, Status

PipelineFactory = Callable[..., Pipeline]


class RecordingRunner(LocalRunner):
    """The in-process runner, recording which items each stage was asked for."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(pipeline)
        self.calls: dict[str, list[str]] = {"hash": [], "signals": [], "judge": []}

    async def hash(self, items: Sequence[PreparedItem]) -> list[HashResult]:
        self.calls["hash"] += [it.item_id for it in items]
        return await super().hash(items)

    async def signals(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]:
        self.calls["signals"] += [it.item_id for it in items]
        return await super().signals(items)

    async def judge(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult]
    ) -> list[JudgeResult]:
        self.calls["judge"] += [it.item_id for it in items]
        return await super().judge(items, signals)


class HitFor:
    """A hash checker with one known image: a decisive bank hit for those bytes only."""

    def __init__(self, bad: bytes) -> None:
        self.bad = bad

    def check(self, data: bytes) -> FakeHashCheck:
        if data == self.bad:
            return FakeHashCheck(matches=(bank_match(),), decisive=bank_match())
        return FakeHashCheck()


def test_the_cascade_asks_each_stage_only_for_what_it_must_read(
    make_pipeline: PipelineFactory,
) -> None:
    p = make_pipeline(hashes=HitFor(png_bytes(seed=1)),
                      image_safety=ReferenceImageSafety(fail=True))
    items = [
        p.prepare(ContentItem(id="benign", text="see you at practice tomorrow")),
        p.prepare(ContentItem(id="flag", text=f"note {probe_marker('grooming')}")),
        p.prepare(ContentItem(id="hash", image=png_bytes(seed=1))),
        p.prepare(ContentItem(id="detector", image=png_bytes(seed=3))),
    ]
    runner = RecordingRunner(p)
    verdicts = asyncio.run(run_cascade(items, runner, p.decide))
    by_id = {v.item_id: v for v in verdicts}
    assert runner.calls["hash"] == ["benign", "flag", "hash", "detector"]
    assert runner.calls["signals"] == ["benign", "flag", "detector"]  # the hash hit is settled
    # the gate settles the benign text; a failed detector gets no gate and no judge call
    assert runner.calls["judge"] == ["flag"]
    assert by_id["hash"].decision is Decision.BLOCK
    assert by_id["detector"].status is Status.ERROR
    assert by_id["detector"].decision is Decision.REVIEW
    assert "gate" not in by_id["detector"].timings_ms
    assert by_id["benign"].decision is Decision.ALLOW and not by_id["benign"].judged


def test_signals_and_gate_gives_no_gate_result_after_a_failed_detector(
    make_pipeline: PipelineFactory,
) -> None:
    """The rule both hosts share (the Ray embedder deployment calls this very method)."""
    p = make_pipeline(image_safety=ReferenceImageSafety(fail=True))
    ok, failed = p.signals_and_gate([p.prepare(ContentItem(text="hello there")),
                                     p.prepare(ContentItem(image=png_bytes()))])
    assert ok[1] is not None and ok[1].ok
    assert failed[0].failed_signals and failed[1] is None


def test_the_sync_api_works_from_inside_a_running_event_loop(
    make_pipeline: PipelineFactory,
) -> None:
    """An async caller of `classify` (a web handler, a notebook) must not hit 'asyncio.run()
    cannot be called from a running event loop'."""
    p = make_pipeline()

    async def caller() -> Decision:
        return p.classify(ContentItem(text="see you at practice tomorrow")).decision

    assert asyncio.run(caller()) is Decision.ALLOW
