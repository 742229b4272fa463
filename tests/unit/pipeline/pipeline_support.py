"""Test doubles for the pipeline tests: real subclasses of the packaged reference models that
record or break on purpose, a hash checker answering a prepared result, a benign picture."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from childguard.models.base import JudgeInput, JudgeOutput
from childguard.models.reference import ReferenceJudge
from childguard.models.reference_signals import ReferenceTextEmbedder
from childguard.policy import Policy
from childguard.schema import HashMatch, Severity


def probe_marker(code: str) -> str:
    """The neutral token that makes the probe of `code` fire (see conftest `probes`)."""
    return f"zq{code}"


class RecordingJudge(ReferenceJudge):
    """The reference judge, recording what it was asked."""

    def __init__(self, policy: Policy, **kw: Any) -> None:
        super().__init__(policy, **kw)
        self.calls: list[JudgeInput] = []
        self.batches: list[int] = []

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.calls.append(item)
        return super().judge(item)

    def judge_batch(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        self.batches.append(len(items))
        return [self.judge(i) for i in items]


class SlowJudge(RecordingJudge):
    """Blocks until released (or 5 s): drives the stage timeout."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.release = threading.Event()
        self.finished = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.release.wait(5.0)
        try:
            return super().judge(item)
        finally:
            self.finished.set()


class RaisingJudge(RecordingJudge):
    """Breaks the judge contract (raises), with the item text in the message."""

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.calls.append(item)
        raise RuntimeError(f"tokenizer choked on {item.text!r}")


class FixedJudge(RecordingJudge):
    """Answers with a fixed JudgeOutput (rationale may quote the item: `{text}`)."""

    def __init__(self, policy: Policy, output: JudgeOutput) -> None:
        super().__init__(policy)
        self.output = output

    def judge(self, item: JudgeInput) -> JudgeOutput:
        self.calls.append(item)
        return self.output.model_copy(
            update={"rationale": self.output.rationale.replace("{text}", item.text or "")}
        )


class CountingEmbedder(ReferenceTextEmbedder):
    """The reference embedder, counting calls and texts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return super().embed_texts(texts)


class RaisingEmbedder(ReferenceTextEmbedder):
    """Fails, echoing its input in the exception (as some libraries do)."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ValueError(f"cannot embed {list(texts)!r}")


@dataclass(frozen=True)
class FakeHashCheck:
    """Same fields as `childguard.hashing.service.HashCheck`."""

    hashes: dict[str, str] = field(default_factory=lambda: {"md5": "0" * 32})
    pdq_quality: int | None = 100
    pdq_used: bool = True
    note: str = ""
    matches: tuple[HashMatch, ...] = ()
    decisive: HashMatch | None = None
    suppressed: tuple[HashMatch, ...] = ()


class FakeHashes:
    """A hash checker that answers with a prepared `FakeHashCheck` (the real HashService is
    exercised in the integration test)."""

    def __init__(self, check: FakeHashCheck | None = None, fail: bool = False) -> None:
        self.result = check or FakeHashCheck()
        self.fail = fail
        self.calls = 0

    def check(self, data: bytes) -> FakeHashCheck:
        self.calls += 1
        if self.fail:
            raise OSError("hash index unavailable")
        return self.result


def bank_match(
    bank: str = "known_bad", *, category: str | None = "sexual_minors", negative: bool = False,
    quarantined: bool = False, distance: int = 4,
) -> HashMatch:
    return HashMatch(
        bank=bank, signal_type="pdq", distance=distance, entry_id=7, category=category,
        severity=None if negative else Severity.CRITICAL, negative=negative,
        quarantined=quarantined,
    )


def png_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small benign synthetic picture (smooth gradient plus noise), PNG-encoded."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=-1)
    arr = np.clip(arr + rng.integers(0, 30, size=arr.shape), 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


