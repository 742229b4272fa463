"""The classification cascade, free of Ray: a `ContentItem` in, a `Verdict` out.

Why it looks like this (docs/architecture.md has the map):

- **One cascade, two hosts.** `cascade.run_cascade` is the one sequence of stages; the CLI and
  evaluation run it in process (`Pipeline.classify`, stages on worker threads), the Ray Serve
  app runs it with a runner that calls its deployments. Offline numbers are therefore the
  numbers of the service, and the stage results (`results`) are plain picklable dataclasses.
- **Cheapest first.** A decisive hash-bank hit blocks the item before any model runs; the cheap
  signals (policy rules, text probes, CLIP concepts, image-safety detectors) let clearly benign
  items skip the LLM judge through the gate; only the rest pay for the judge.
- **Fail closed.** Stages never raise for model or stage trouble: they return a result with
  `status=error` and a redacted reason, and every stage is bounded by
  `settings.serve.stage_timeout_s`. Any error or timeout ends in `status=error,
  decision=review`, never allow. Only bad *input* raises (`UserError`), which the API turns
  into a 4xx.
- **No raw content leaves the item.** Verdicts, errors and logs carry ids, hashes, scores and
  rationale; error messages and the judge's rationale pass through a redactor (`redaction`).
- **Pluggable where quality work tunes it.** The gate and the combiners (`strategies`) are
  small strategy classes; `decide` turns stage outputs into the verdict; `assembly` builds the
  components from settings.

Modules: ports (what the cascade needs of its collaborators), redaction, results, prepare,
strategies, decide, stages (`Pipeline`), cascade, assembly.
"""

from __future__ import annotations

from childguard.pipeline.assembly import build_pipeline
from childguard.pipeline.cascade import run_cascade
from childguard.pipeline.decide import DECISION_RANK, Decider
from childguard.pipeline.ports import HashChecker, ProbeModel, embedder_keys, probe_version
from childguard.pipeline.redaction import (
    ERROR_CODES,
    Redactor,
    describe_exception,
    error_code,
    sanitize,
    timeout_error,
)
from childguard.pipeline.results import (
    STAGES,
    GateResult,
    HashResult,
    JudgeResult,
    PreparedItem,
    SignalResult,
    StageResult,
)
from childguard.pipeline.stages import Pipeline
from childguard.pipeline.strategies import (
    COMBINERS,
    Combination,
    CombinedScore,
    GatePolicy,
    JudgeFirstCombiner,
    MaxCombiner,
    ScoreCombiner,
    StackedCombiner,
    ThresholdGate,
    judge_score,
)

__all__ = [
    "COMBINERS",
    "DECISION_RANK",
    "ERROR_CODES",
    "STAGES",
    "Combination",
    "CombinedScore",
    "Decider",
    "GatePolicy",
    "GateResult",
    "HashChecker",
    "HashResult",
    "JudgeFirstCombiner",
    "JudgeResult",
    "MaxCombiner",
    "Pipeline",
    "PreparedItem",
    "ProbeModel",
    "Redactor",
    "ScoreCombiner",
    "SignalResult",
    "StackedCombiner",
    "StageResult",
    "ThresholdGate",
    "build_pipeline",
    "describe_exception",
    "embedder_keys",
    "error_code",
    "judge_score",
    "probe_version",
    "run_cascade",
    "sanitize",
    "timeout_error",
]
