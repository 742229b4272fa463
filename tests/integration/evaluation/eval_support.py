"""Helpers for the evaluation integration tests (policies copied to tmp, reference pipeline)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from childguard.normalize import normalize_text
from childguard.pipeline import Pipeline
from childguard.policy import Policy
from childguard.settings import Settings

REPO = Path(__file__).resolve().parents[3]
POLICY_SRC = REPO / "policies" / "child_safety"

def copy_policy(dest_root: Path, *, wording: str | None = None,
                review: float | None = None) -> Path:
    """A copy of the child-safety policy under `dest_root/child_safety`, optionally with an
    extra rule line in the prompt and another sexual_minors review threshold."""
    dest = dest_root / "child_safety"
    shutil.copytree(POLICY_SRC, dest, ignore=shutil.ignore_patterns("calibration.yaml"))
    if wording:
        prompt = dest / "prompt.md"
        text = prompt.read_text(encoding="utf-8")
        prompt.write_text(text.replace("## Rules\n", f"## Rules\n- {wording}\n", 1),
                          encoding="utf-8")
    if review is not None:
        pol = dest / "policy.yaml"
        text = pol.read_text(encoding="utf-8")
        old = "thresholds: {review: 0.30, block: 0.90}"
        assert old in text
        pol.write_text(text.replace(old, f"thresholds: {{review: {review}, block: 0.90}}", 1),
                       encoding="utf-8")
    return dest


def reference_pipeline(settings: Settings, policy: Policy,
                       scores: Mapping[str, Mapping[str, float]]) -> Pipeline:
    from childguard.models.reference import ReferenceJudge
    from childguard.models.reference_signals import ReferenceTextEmbedder

    return Pipeline(settings=settings, policy=policy,
                    judge=ReferenceJudge(policy, scores=scores),
                    normalizer=normalize_text, text_embedder=ReferenceTextEmbedder())
