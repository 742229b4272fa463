"""Ports: what the cascade needs of its collaborators, typed by use, not by implementation.

Why: the pipeline reads a few things of the hash service and two of a probe set; naming just
those lets tests pass small reference implementations and keeps `hashing/` and
`models/probes.py` out of the cascade's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from childguard.models.base import TextEmbedder
from childguard.schema import HashMatch

if TYPE_CHECKING:
    from childguard.hashing.video import VideoHashes

__all__ = ["HashCheckLike", "HashChecker", "ProbeModel", "embedder_keys", "probe_version"]


@runtime_checkable
class ProbeModel(Protocol):
    """What the pipeline needs of a probe set (`childguard.models.probes.ProbeSet`)."""

    version: str
    embedder: str

    def predict(self, embs: np.ndarray) -> dict[str, np.ndarray]: ...


class HashCheckLike(Protocol):
    """What the pipeline reads of `childguard.hashing.service.HashCheck`."""

    @property
    def hashes(self) -> dict[str, str]: ...
    @property
    def pdq_quality(self) -> int | None: ...
    @property
    def pdq_used(self) -> bool: ...
    @property
    def note(self) -> str: ...
    @property
    def matches(self) -> tuple[HashMatch, ...]: ...
    @property
    def decisive(self) -> HashMatch | None: ...
    @property
    def suppressed(self) -> tuple[HashMatch, ...]: ...


class HashChecker(Protocol):
    """What the pipeline needs of `childguard.hashing.service.HashService`."""

    def check(self, data: bytes) -> HashCheckLike: ...

    def check_video(self, video: VideoHashes) -> HashCheckLike: ...


def probe_version(probes: ProbeModel) -> str:
    return str(getattr(probes, "model_version", None) or probes.version)


def embedder_keys(embedder: TextEmbedder) -> tuple[str, ...]:
    """The names a probe set may record for the embedder it was trained on."""
    version = embedder.model_version
    keys = [version, version.split("@", 1)[0], getattr(embedder, "name", "")]
    return tuple(dict.fromkeys(k for k in keys if k))

