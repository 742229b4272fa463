"""Calibrated thresholds apply only to a pipeline that has the probes they were fitted on.

The shipped calibration.yaml is fitted on fine-tuned probe scores (review bars near 0.01); a
pipeline without trained probes decides on the judge's scores, where such bars would send every
item to review. These tests calibrate the repo's policy to bars of 0.01 and check which
thresholds decide, and that a benign item is allowed without probes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from childguard.models.probes import ProbeSet
from childguard.pipeline import Pipeline
from childguard.policy import Policy, StackWeights, load_policy
from childguard.policy_calibration import (
    Calibration,
    CategoryCalibration,
    GateCalibration,
    Targets,
    apply_calibration,
)
from childguard.schema import ContentItem, Decision

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies" / "child_safety"
BENIGN = "see you at practice on saturday, bring the blue jerseys"


def _calibrated() -> Policy:
    """The repo's policy with review bars of 0.01, below the 0.02 the reference judge gives
    every benign item (as fine-tuned probes' calibrations are), and a stacker."""
    policy = load_policy(POLICY_DIR)
    assert min(t.review for t in policy.thresholds().values()) > 0.02
    cal = Calibration(
        policy_id=policy.id, policy_version=policy.version, created_at=datetime.now(UTC),
        targets=Targets(),
        categories={c: CategoryCalibration(review=0.01, block=0.9) for c in policy.spec.codes},
        gate=GateCalibration(allow_below=0.01),
        stacker={c: StackWeights(bias=0.0, probe=1.0, judge=0.0) for c in policy.spec.codes})
    return apply_calibration(policy, cal)


def test_without_probes_the_policy_decides_on_its_own_thresholds(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    calibrated = _calibrated()
    assert calibrated.uncalibrated is not None
    p = make_pipeline(policy=calibrated, probes=None)
    assert p.policy.thresholds() == load_policy(POLICY_DIR).thresholds()
    assert "+cal" not in p.policy.version
    assert p.policy.spec.judge.combine == load_policy(POLICY_DIR).spec.judge.combine
    verdict = p.classify(ContentItem(text=BENIGN))
    assert verdict.decision is Decision.ALLOW, verdict


def test_with_probes_or_when_told_the_calibration_applies(
    make_pipeline: Callable[..., Pipeline], probes: ProbeSet,
) -> None:
    calibrated = _calibrated()
    with_probes = make_pipeline(policy=calibrated)
    assert with_probes.policy is calibrated
    # a Ray ingress holds no probes but decides on the embedder deployment's probe scores
    told = make_pipeline(policy=calibrated, probes=None, calibrated=True)
    assert told.policy is calibrated
    # evaluation swaps probes into a pipeline built without them: the calibration returns
    late = make_pipeline(policy=calibrated, probes=None)
    assert late.policy is not calibrated
    late.use_probes(probes)
    assert late.policy is calibrated
    assert late.combiner.name == calibrated.spec.judge.combine


def test_a_promotion_keeps_the_rule(make_pipeline: Callable[..., Pipeline]) -> None:
    calibrated = _calibrated()
    p = make_pipeline(policy=load_policy(POLICY_DIR), probes=None)
    p.use_policy(calibrated)
    assert p.policy.thresholds() == load_policy(POLICY_DIR).thresholds()
