"""Fixtures for the pipeline tests: the real policy, the packaged reference models, and a real
`ProbeSet` whose numbers are set by hand so a test knows which probe fires.

Positive items are written with neutral marker tokens (`zq<code>` for the probes,
`cg-test:<code>` for the reference judge), never with harmful text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_support import RecordingJudge, SlowJudge, probe_marker

from childguard.models.probes import CategoryProbe, ProbeSet
from childguard.models.reference_signals import ReferenceTextEmbedder
from childguard.normalize import normalize_text
from childguard.pipeline import Pipeline
from childguard.policy import Policy, load_policy
from childguard.settings import Settings

POLICIES = Path(__file__).resolve().parents[3] / "policies"


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(POLICIES / "child_safety")


@pytest.fixture(scope="session")
def embedder() -> ReferenceTextEmbedder:
    return ReferenceTextEmbedder()


@pytest.fixture(scope="session")
def probes(policy: Policy, embedder: ReferenceTextEmbedder) -> ProbeSet:
    """One linear probe per category along the direction of its marker token.

    P = sigmoid(40 * cos(text, marker) - 12): a short text containing the marker scores
    near 1, any other text far below the gate's 0.05 (cosines of unrelated texts are ~0.05).
    """
    directions = embedder.embed_texts([probe_marker(c) for c in policy.spec.codes])
    cats = {
        code: CategoryProbe(
            weights=directions[i : i + 1].astype(np.float64),
            bias=np.zeros(1),
            platt_a=np.array([-40.0]),
            platt_b=np.array([12.0]),
        )
        for i, code in enumerate(policy.spec.codes)
    }
    return ProbeSet(embedder=ReferenceTextEmbedder.name, dim=embedder.dim, probes=cats)


@pytest.fixture
def pipeline_settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home", policies_dir=POLICIES)


@pytest.fixture
def make_pipeline(
    pipeline_settings: Settings, policy: Policy, probes: ProbeSet
) -> Iterator[Callable[..., Pipeline]]:
    """Build a Pipeline from explicit components; defaults: reference judge (recording),
    reference text embedder, the hand-set probes, no hashes, no image models."""
    built: list[Pipeline] = []

    def make(**kw: Any) -> Pipeline:
        kw.setdefault("settings", pipeline_settings)
        kw.setdefault("policy", policy)
        kw.setdefault("judge", RecordingJudge(kw["policy"]))
        kw.setdefault("normalizer", normalize_text)
        kw.setdefault("text_embedder", ReferenceTextEmbedder())
        kw.setdefault("probes", probes)
        p = Pipeline(**kw)
        built.append(p)
        return p

    yield make
    for p in built:
        judge = p.judge
        if isinstance(judge, SlowJudge):
            judge.release.set()
        p.close()
