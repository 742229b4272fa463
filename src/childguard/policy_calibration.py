"""Calibrated thresholds stored next to a policy (`<policy dir>/calibration.yaml`).

Why a module at the policy layer: `childguard eval calibrate` (evaluation) writes this file and
the pipeline reads it, and the pipeline must not import evaluation (imports point one way). So
the file format, the loader and `apply_calibration` live here, beside `policy.py`; the fitting
lives in `childguard.evaluation.calibration`.

How the pipeline picks it up: `load_calibrated_policy(policy_dir)` instead of
`load_policy(policy_dir)`, or `apply_calibration(policy, load_calibration(policy.path))`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from childguard.errors import UserError
from childguard.policy import Policy, StackWeights, Thresholds

CALIBRATION_FILE = "calibration.yaml"


class Targets(BaseModel):
    """What the thresholds must achieve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recall: float = Field(default=0.98, gt=0.0, lt=1.0,
                          description="share of violating items flagged (review or block)")
    block_fpr: float = Field(default=0.01, gt=0.0, lt=1.0,
                             description="largest share of non-violating items blocked")
    gate_recall: float = Field(default=0.99, gt=0.0, lt=1.0,
                               description="share of violating items the gate sends to the judge")
    review_fpr: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="review budget: largest share of the items that violate nothing a "
        "category may flag; where the recall target needs more, the budget wins and the "
        "report says so")


class CategoryCalibration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    review: float = Field(gt=0.0, le=1.0)
    block: float = Field(gt=0.0, le=1.0)


class GateCalibration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_below: float = Field(ge=0.0, le=1.0)


class Calibration(BaseModel):
    """The content of calibration.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str
    policy_version: str = Field(description="version of the policy the thresholds were fitted on")
    created_at: datetime
    source_run: str | None = None
    targets: Targets
    categories: dict[str, CategoryCalibration] = Field(default_factory=dict)
    gate: GateCalibration | None = None
    #: per-category stacker weights (`eval calibrate --stacker`); present: combine = stacked
    stacker: dict[str, StackWeights] | None = None
    report: dict[str, Any] = Field(default_factory=dict)

    @property
    def digest(self) -> str:
        fitted: dict[str, Any] = {
            "categories": {k: v.model_dump() for k, v in sorted(self.categories.items())},
            "gate": self.gate.model_dump() if self.gate else None}
        if self.stacker is not None:
            fitted["stacker"] = {k: v.model_dump() for k, v in sorted(self.stacker.items())}
        body = yaml.safe_dump(fitted, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:8]


# -- the file the pipeline reads ----------------------------------------------------------------


def calibration_path(policy_dir: Path) -> Path:
    return Path(policy_dir) / CALIBRATION_FILE


def write_calibration(cal: Calibration, policy_dir: Path) -> Path:
    path = calibration_path(policy_dir)
    data = cal.model_dump(mode="json")
    data["report"] = _clean(data["report"])
    header = ("# Written by `childguard eval calibrate`; read by the pipeline through\n"
              "# childguard.evaluation.calibration.load_calibration/apply_calibration.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _clean(obj: Any) -> Any:
    """NaN -> None so the YAML stays readable and loadable everywhere."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_calibration(policy_dir: Path) -> Calibration | None:
    """The calibration next to a policy, or None when the policy has never been calibrated."""
    path = calibration_path(policy_dir)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Calibration.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise UserError(f"{path}: not a valid calibration file: {exc}") from exc


def apply_calibration(policy: Policy, cal: Calibration | None) -> Policy:
    """The policy with calibrated thresholds (and gate) in place of those in policy.yaml.

    The returned policy's version is `<policy version>+cal<digest>` so verdicts and runs name
    the thresholds they used. A calibration fitted on another version of the policy is still
    applied (the wording changed, the thresholds are the best we have) and the version says
    so with `+stalecal`; re-run `childguard eval calibrate` after changing the prompt.
    """
    if cal is None:
        return policy
    if cal.policy_id != policy.id:
        raise UserError(f"calibration is for policy {cal.policy_id!r}, not {policy.id!r}")
    unknown = sorted(set(cal.categories) - set(policy.spec.codes))
    if unknown:
        raise UserError(f"calibration names categories {unknown} that policy {policy.id} does "
                        f"not have ({', '.join(policy.spec.codes)})")
    new_cats = []
    for c in policy.spec.categories:
        cc = cal.categories.get(c.code)
        if cc is None:
            new_cats.append(c)
        else:
            new_cats.append(c.model_copy(update={
                "thresholds": Thresholds(review=cc.review, block=cc.block)}))
    update: dict[str, Any] = {"categories": tuple(new_cats)}
    if cal.gate is not None:
        update["gate"] = policy.spec.gate.model_copy(update={"allow_below": cal.gate.allow_below})
    if cal.stacker is not None:
        unknown = sorted(set(cal.stacker) - set(policy.spec.codes))
        if unknown:
            raise UserError(f"calibration's stacker names categories {unknown} that policy "
                            f"{policy.id} does not have")
        update["judge"] = policy.spec.judge.model_copy(
            update={"combine": "stacked", "stacker": dict(cal.stacker)})
    spec = policy.spec.model_copy(update=update)
    tag = "cal" if cal.policy_version == policy.version else "stalecal"
    return dataclasses.replace(policy, spec=spec, version=f"{policy.version}+{tag}{cal.digest}",
                               uncalibrated=policy.without_calibration())


def load_calibrated_policy(policy_dir: Path) -> Policy:
    """`load_policy` + `apply_calibration`: what the pipeline and `eval run` should use."""
    from childguard.policy import load_policy

    policy = load_policy(policy_dir)
    return apply_calibration(policy, load_calibration(policy_dir))
