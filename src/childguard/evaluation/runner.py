"""`eval run`: the service's own pipeline over evaluation sets, measured and logged to MLflow.

Why in-process and the same `Pipeline`: the numbers must be the numbers of the service. The
runner only feeds items, times each call, turns verdicts into id-only `Prediction` rows and
computes metrics from them; the policy (with its calibration applied, unless asked not to) and
the judge are exactly what `build_pipeline` would build.

Metric names are `<dataset>.<code>.<metric>` (code `any` = any category: score = highest
category score, flagged = the item's decision is review or block) plus `<dataset>.review_rate`,
`.judge_call_rate`, `.latency_p50_ms`, ... and the same without the dataset prefix over all sets.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np

from childguard.errors import UserError
from childguard.evaluation.calibration import apply_calibration, load_calibration
from childguard.evaluation.datasets import EvalDataset
from childguard.evaluation.metrics import (
    DEFAULT_FPR_TARGETS,
    bootstrap_intervals,
    category_metrics,
    finite,
    percentile,
)
from childguard.evaluation.predictions import (
    INVALID,
    PREDICTIONS_FILE,
    Prediction,
    from_verdict,
    write_predictions,
)
from childguard.policy import Policy, load_policy, resolve_policy_path
from childguard.schema import ContentItem, Decision, Status, Verdict
from childguard.settings import JudgeSettings, Settings

ANY = "any"
#: `--judge none`: the cascade without its LLM stage (hashes, probes, gate, decide), the
#: configuration that measures what the cheap signals settle on their own
NO_JUDGE = "none"


class Classifier(Protocol):
    """What the runner needs of the pipeline."""

    def classify(self, item: ContentItem) -> Verdict: ...


@dataclass(frozen=True)
class RunOptions:
    judge: str | None = None  # backend[:model] override of settings.judge
    gate: bool = True
    calibration: bool = True  # apply <policy dir>/calibration.yaml
    limit: int | None = None
    run_name: str | None = None
    progress: bool = True
    fpr_targets: tuple[float, ...] = DEFAULT_FPR_TARGETS
    tags: Mapping[str, str] = field(default_factory=dict)
    #: per-stage timeout override: a loaded machine would otherwise turn slow judge calls into
    #: fail-closed reviews, measuring the machine instead of the model (error_rate shows it)
    stage_timeout_s: float | None = None
    #: train the probes inside the run on these sets instead of loading the saved ones; an
    #: evaluated item that is also a training item is scored out of fold (`cross_fit` folds)
    probe_train: tuple[EvalDataset, ...] = ()
    cross_fit: int = 0
    #: read and fill the stage-output cache (evaluation/stage_cache.py); off: compute all
    cache: bool = True
    #: (k, n): evaluate only shard k of n of every set (to fill the cache in chunks)
    shard: tuple[int, int] | None = None


@dataclass
class EvalResult:
    run_id: str | None
    metrics: dict[str, float]
    predictions: list[Prediction]
    params: dict[str, str]
    policy: Policy


# -- building what the run uses ---------------------------------------------------------------


def settings_for(settings: Settings, judge: str | None) -> Settings:
    """Settings with the judge backend (and model, as `backend:model`) overridden."""
    if not judge or judge == NO_JUDGE:
        return settings
    backend, _, model = judge.partition(":")
    allowed = get_args(JudgeSettings.model_fields["backend"].annotation)
    if backend not in allowed:
        raise UserError(f"--judge {judge!r}: backend must be one of {', '.join(allowed)} "
                        "(optionally backend:model)")
    update: dict[str, Any] = {"backend": backend}
    if model:
        update["model"] = model
    return settings.model_copy(update={"judge": settings.judge.model_copy(update=update)})


def load_run_policy(settings: Settings, ref: str | Path | None = None, *, gate: bool = True,
                    calibration: bool = True) -> Policy:
    """The policy an eval run uses: by id or path, calibrated, gate possibly switched off."""
    path = resolve_policy_path(ref or settings.policy, settings.policies_dir)
    policy = load_policy(path)
    if calibration:
        policy = apply_calibration(policy, load_calibration(path))
    if not gate:
        spec = policy.spec.model_copy(
            update={"gate": policy.spec.gate.model_copy(update={"enabled": False})})
        policy = dataclasses.replace(policy, spec=spec)
    return policy


class _TextOnlyHashes:
    """Hash checker for text-only evaluation sets: the hash stage skips items without an
    image before calling it, so it is never called; if it were, it fails (-> review)."""

    def check(self, data: bytes) -> Any:
        raise RuntimeError("evaluation sets are text-only; no hash banks are loaded")

    def check_video(self, video: Any) -> Any:
        raise RuntimeError("evaluation sets are text-only; no hash banks are loaded")


def build_text_pipeline(settings: Settings, policy: Policy, *, judge: bool = True,
                        judge_model: Any = None, models: str = "real") -> Any:
    """`build_pipeline` for text-only evaluation sets.

    Every text stage (normalise, embed, probes, gate, judge, decide) is built exactly as the
    service builds it; the image-only parts (hash banks, image-safety detectors, OCR) are left
    out since no evaluation item has an image; `model_versions` names them as disabled.
    """
    from childguard.pipeline import build_pipeline

    text_only = settings.model_copy(update={"models": settings.models.model_copy(
        update={"image_safety": False, "ocr": False})})
    return build_pipeline(text_only, policy=policy, hashes=_TextOnlyHashes(),
                          with_judge=judge, judge=judge_model if judge else None,
                          models=models)  # type: ignore[arg-type]


# -- predicting -----------------------------------------------------------------------------------


def predict(pipeline: Classifier, datasets: Sequence[EvalDataset], *,
            progress: bool = True, probe_plan: Any = None,
            judge_plan: Any = None, cache: Any = None) -> list[Prediction]:
    """Classify every item with text; rows carry ids, labels, scores and decisions only.
    With a `probe_plan` (probes trained in the run) each item is scored by the probe set the
    plan names for it (out of fold for training items); `judge_plan` does the same for the
    probe judge's probes (judge backend llm_probe). With a stage `cache`, an item's latency
    includes the recorded time of the stage outputs it replayed (what the service would
    spend), not only the replay's."""
    from tqdm import tqdm

    total = sum(len(ds) for ds in datasets)
    preds: list[Prediction] = []
    with tqdm(total=total, file=sys.stderr, disable=not progress, unit="item",
              desc="eval") as bar:
        for ds in datasets:
            for it in ds:
                bar.update(1)
                if not it.text:
                    continue
                item = ContentItem(id=it.id, text=it.text, context=it.context,
                                   source=f"eval:{ds.name}")
                if probe_plan is not None:
                    pipeline.use_probes(  # type: ignore[attr-defined]
                        probe_plan.for_item(ds.name, it.id))
                if judge_plan is not None:
                    pipeline.judge.use_probes(  # type: ignore[attr-defined]
                        judge_plan.for_item(ds.name, it.id))
                if cache is not None:
                    cache.take_replayed_ms()
                t0 = time.perf_counter()
                try:
                    verdict = pipeline.classify(item)
                except UserError as exc:
                    preds.append(Prediction(
                        id=it.id, dataset=ds.name, labels=dict(it.labels), scores={},
                        category_decisions={}, decision=INVALID, status=INVALID, judged=False,
                        latency_ms=(time.perf_counter() - t0) * 1000, split=it.split,
                        extra={"error": type(exc).__name__},
                    ))
                    continue
                latency = (time.perf_counter() - t0) * 1000
                if cache is not None:
                    latency += cache.take_replayed_ms()
                pred = from_verdict(verdict, dataset=ds.name, labels=it.labels,
                                    split=it.split, latency_ms=latency)
                if "obfuscation" in it.meta:
                    pred = dataclasses.replace(pred, extra={
                        **pred.extra, "obfuscation": it.meta["obfuscation"]})
                preds.append(pred)
    return preds


# -- metrics --------------------------------------------------------------------------------------


def compute_metrics(preds: Sequence[Prediction], codes: Sequence[str], *,
                    fpr_targets: Sequence[float] = DEFAULT_FPR_TARGETS) -> dict[str, float]:
    """Every metric of the run, per dataset and over all datasets (no prefix). NaN dropped."""
    out: dict[str, float] = {}
    datasets = sorted({p.dataset for p in preds})
    groups: list[tuple[str, list[Prediction]]] = [("", list(preds))]
    if len(datasets) > 1:
        groups += [(f"{d}.", [p for p in preds if p.dataset == d]) for d in datasets]
    elif datasets:
        groups = [(f"{datasets[0]}.", list(preds)), ("", list(preds))]
    for prefix, rows in groups:
        out.update({f"{prefix}{k}": v for k, v in _group_metrics(rows, codes, fpr_targets).items()})
    return finite(out)


def _group_metrics(rows: Sequence[Prediction], codes: Sequence[str],
                   fpr_targets: Sequence[float]) -> dict[str, float]:
    valid = [p for p in rows if p.decision != INVALID]
    m: dict[str, float] = {"items": float(len(rows)), "invalid": float(len(rows) - len(valid))}
    if not valid:
        return m
    decisions = np.array([p.decision for p in valid])
    m["review_rate"] = float(np.mean(decisions == Decision.REVIEW.value))
    m["block_rate"] = float(np.mean(decisions == Decision.BLOCK.value))
    m["flag_rate"] = float(np.mean([p.flagged for p in valid]))
    m["judge_call_rate"] = float(np.mean([p.judged for p in valid]))
    m["error_rate"] = float(np.mean([p.status == Status.ERROR.value for p in valid]))
    m["report_rate"] = float(np.mean([p.report for p in valid]))
    lat = [p.latency_ms for p in valid]
    m["latency_p50_ms"] = percentile(lat, 50)
    m["latency_p95_ms"] = percentile(lat, 95)
    m["latency_mean_ms"] = float(np.mean(lat))
    # the cheap path on its own: what a product service waits for most items
    unjudged = [p.latency_ms for p in valid if not p.judged]
    if unjudged:
        m["latency_p50_unjudged_ms"] = percentile(unjudged, 50)
    for code in codes:
        lab = [p for p in valid if code in p.labels]
        if not lab:
            continue
        m.update(_scored(code, [p.labels[code] for p in lab], [p.score(code) for p in lab],
                         [p.category_flagged(code) for p in lab],
                         [p.category_blocked(code) for p in lab], fpr_targets))
    m.update(_obfuscation_slices(valid))
    anyl = [(p, y) for p in valid if (y := _any(p)) is not None]
    if anyl:
        m.update(_scored(ANY, [y for _, y in anyl],
                         [max(p.scores.values(), default=0.0) for p, _ in anyl],
                         [p.flagged for p, _ in anyl],
                         [p.decision == Decision.BLOCK.value for p, _ in anyl], fpr_targets))
    return m


def _scored(code: str, labels: Sequence[int], scores: Sequence[float], flags: Sequence[bool],
            blocks: Sequence[bool], fpr_targets: Sequence[float]) -> dict[str, float]:
    """One category's metrics and their bootstrap intervals, under `<code>.`."""
    cm = category_metrics(labels, scores, flags, blocks, fpr_targets=fpr_targets)
    return {f"{code}.{k}": v for k, v in
            {**cm.as_flat(), **bootstrap_intervals(labels, scores, flags)}.items()}


def _obfuscation_slices(rows: Sequence[Prediction]) -> dict[str, float]:
    """Recall of violating items written plainly vs obfuscated or injection-wrapped (items
    whose set marks `obfuscation`): the acceptance that disguise costs no recall.
    `slice.plain.any.recall`, `slice.disguised.any.recall`, `slice.<kind>.any.recall`, with
    `.n` and bootstrap intervals."""
    marked_sets = {p.dataset for p in rows if "obfuscation" in p.extra}
    if not marked_sets:
        return {}
    out: dict[str, float] = {}
    pos = [p for p in rows if p.dataset in marked_sets and _any(p) == 1]
    kinds = sorted({str(p.extra["obfuscation"]) for p in pos if "obfuscation" in p.extra})
    groups = {"plain": [p for p in pos if "obfuscation" not in p.extra],
              "disguised": [p for p in pos if "obfuscation" in p.extra],
              **{k: [p for p in pos if p.extra.get("obfuscation") == k] for k in kinds}}
    for name, group in groups.items():
        if not group:
            continue
        flags = [p.flagged for p in group]
        out[f"slice.{name}.any.n"] = float(len(group))
        out[f"slice.{name}.any.recall"] = float(np.mean(flags))
        ci = bootstrap_intervals([1] * len(group), [1.0] * len(group), flags)
        for k in ("recall_lo", "recall_hi"):
            if k in ci:
                out[f"slice.{name}.any.{k}"] = ci[k]
    return out


def _any(p: Prediction) -> int | None:
    if not p.labels:
        return None
    return int(any(v == 1 for v in p.labels.values()))


# -- the run ---------------------------------------------------------------------------------------


def _embedder_param(settings: Settings) -> str:
    m = settings.models
    return m.text_embedder + ("+age" if m.age_features else "")


def run_params(policy: Policy, options: RunOptions, datasets: Sequence[EvalDataset],
               settings: Settings) -> dict[str, str]:
    params: dict[str, str] = {
        "policy_id": policy.id,
        "policy_version": policy.version,
        "policy_path": str(policy.path),
        "gate": str(policy.spec.gate.enabled),
        "gate_allow_below": f"{policy.spec.gate.allow_below:g}",
        "gate_require_probes": str(policy.spec.gate.require_probes),
        "judge_backend": NO_JUDGE if options.judge == NO_JUDGE else settings.judge.backend,
        "judge_model": "" if options.judge == NO_JUDGE else settings.judge.model,
        "judge_combine": policy.spec.judge.combine,
        "text_embedder": _embedder_param(settings),
        "probe_context_messages": str(settings.models.probe_context_messages),
        "probe_heads": settings.models.probe_heads,
        # configured C ("" = the encoder's own); a run that trains its probes logs the C used
        "probe_c": "" if settings.models.probe_c is None else f"{settings.models.probe_c:g}",
        "judge_mode": policy.spec.judge.mode,
        "stage_timeout_s": f"{settings.serve.stage_timeout_s:g}",
        "calibration": str(options.calibration),
        "limit": str(options.limit or ""),
        "shard": f"{options.shard[0]}/{options.shard[1]}" if options.shard else "",
        "stage_cache": str(options.cache),
        "datasets": ",".join(ds.name for ds in datasets),
    }
    for ds in datasets:
        params[f"dataset.{ds.name}.hash"] = ds.content_hash
        params[f"dataset.{ds.name}.items"] = str(len(ds))
        # rows the runner skips (a reviewed snapshot's rows whose content was purged)
        params[f"dataset.{ds.name}.without_text"] = str(sum(1 for it in ds if not it.text))
    for code, t in policy.thresholds().items():
        params[f"threshold.{code}.review"] = f"{t.review:g}"
        params[f"threshold.{code}.block"] = f"{t.block:g}"
    return params


def evaluate(
    settings: Settings,
    datasets: Sequence[EvalDataset],
    *,
    policy: Policy | str | Path | None = None,
    options: RunOptions = RunOptions(),
    pipeline: Classifier | None = None,
    log: bool = True,
) -> EvalResult:
    """Run the pipeline over `datasets` and (with `log`) record everything in MLflow.

    `pipeline`: give one to reuse (tests pass one built from reference components); otherwise
    `build_pipeline` builds it with the run's policy and judge.
    """
    t_run = time.perf_counter()
    eff = settings_for(settings, options.judge)
    if options.stage_timeout_s is not None:
        if options.stage_timeout_s <= 0:
            raise UserError(f"--stage-timeout must be > 0 seconds; received "
                            f"{options.stage_timeout_s}")
        eff = eff.model_copy(update={"serve": eff.serve.model_copy(
            update={"stage_timeout_s": options.stage_timeout_s})})
    if not isinstance(policy, Policy):
        policy = load_run_policy(eff, policy, gate=options.gate, calibration=options.calibration)
    elif not options.gate and policy.spec.gate.enabled:
        spec = policy.spec.model_copy(
            update={"gate": policy.spec.gate.model_copy(update={"enabled": False})})
        policy = dataclasses.replace(policy, spec=spec)
    datasets = [ds.limit(options.limit) for ds in datasets]
    if options.shard is not None:
        datasets = [ds.shard(*options.shard) for ds in datasets]
    own_pipeline = pipeline is None
    with_judge = options.judge != NO_JUDGE
    probe_judge = with_judge and eff.judge.backend == "llm_probe"
    if probe_judge:
        from childguard.models.judge_probe import ProbeJudge, with_feature_cache

        eff = with_feature_cache(eff)
    if pipeline is None:
        judge_model = None
        if probe_judge and options.probe_train:  # its probes are trained below, in the run
            judge_model = ProbeJudge.untrained(eff, policy)
        pipeline = build_text_pipeline(eff, policy, judge=with_judge, judge_model=judge_model)
    cache = None
    if options.cache and own_pipeline:  # a given pipeline's components are the caller's
        from childguard.evaluation import stage_cache

        cache = stage_cache.StageCache(stage_cache.cache_path(eff.home))
        stage_cache.attach(pipeline, cache, policy, eff.judge)
    plan = judge_plan = None
    probe_judge_model: Any = None
    if options.probe_train:
        from childguard.evaluation.probe_training import plan_probes

        embedder = getattr(pipeline, "text_embedder", None)
        if embedder is None or not hasattr(pipeline, "use_probes"):
            raise UserError("training probes in the run needs a pipeline with a text embedder")
        plan = plan_probes(embedder, options.probe_train, datasets, folds=options.cross_fit,
                           progress=options.progress, heads=eff.models.probe_heads,
                           C=eff.models.probe_c)
        pipeline.use_probes(plan.final)  # type: ignore[union-attr]
        probe_judge_model = getattr(pipeline, "judge", None)
        if probe_judge_model is not None and hasattr(probe_judge_model, "use_probes"):
            # the probe judge's probes: same rows, same folds, the judge model's features
            judge_plan = plan_probes(probe_judge_model.embedder, options.probe_train, datasets,
                                     folds=options.cross_fit, progress=options.progress,
                                     heads=eff.models.probe_heads)
            probe_judge_model.use_probes(judge_plan.final)
    if plan is None:
        refuse_seen_items(getattr(pipeline, "probes", None), datasets)
    refuse_seen_items(getattr(pipeline, "text_embedder", None), datasets, what="text encoder")
    params = run_params(policy, options, datasets, eff)
    if plan is not None:
        params["probes_trained_in_run"] = plan.description
        params["probe_c"] = f"{plan.C:g}"  # what trained them (configured or the encoder's)
        params["cross_fit"] = str(plan.folds)
        for ds in options.probe_train:
            params[f"probe_train.{ds.name}.hash"] = ds.content_hash
    model_versions: dict[str, str] = dict(getattr(pipeline, "model_versions", {}) or {})
    if plan is not None:
        model_versions["probes"] = (plan.final.model_version
                                    + (f" (+{plan.folds} out-of-fold sets)" if plan.folds else ""))
    if judge_plan is not None:
        model_versions["judge"] = (
            f"{probe_judge_model.model_version}"
            + (f" (+{judge_plan.folds} out-of-fold sets)" if judge_plan.folds else ""))
    try:
        if not log:
            preds = predict(pipeline, datasets, progress=options.progress,
                            probe_plan=plan, judge_plan=judge_plan, cache=cache)
            metrics = compute_metrics(preds, policy.spec.codes, fpr_targets=options.fpr_targets)
            metrics.update(_run_costs(cache, t_run))
            return EvalResult(None, metrics, preds, params, policy)
        import mlflow

        from childguard.evaluation import tracking

        exp_id = tracking.experiment_id(eff, tracking.EXPERIMENT_EVAL)
        with mlflow.start_run(experiment_id=exp_id, run_name=options.run_name) as run:
            mlflow.set_tags({"childguard.kind": "eval", "policy_id": policy.id,
                             "policy_version": policy.version, **options.tags})
            tracking.log_params(params)
            tracking.log_params({f"model.{k}": v for k, v in model_versions.items()})
            for ds in datasets:
                tracking.log_dataset(ds, context="evaluation")
            try:
                prompt_uri = tracking.register_policy_prompt(policy)
                mlflow.set_tag("policy_prompt", prompt_uri)
            except Exception as exc:  # the registry is a convenience, not the run
                mlflow.set_tag("policy_prompt_error", f"{type(exc).__name__}: {exc}"[:500])
            preds = predict(pipeline, datasets, progress=options.progress,
                            probe_plan=plan, judge_plan=judge_plan, cache=cache)
            metrics = compute_metrics(preds, policy.spec.codes, fpr_targets=options.fpr_targets)
            metrics.update(_run_costs(cache, t_run))
            tracking.log_metrics(metrics)
            log_artifacts(preds, policy.spec.codes, metrics)
            return EvalResult(run.info.run_id, metrics, preds, params, policy)
    finally:
        if own_pipeline:
            close = getattr(pipeline, "close", None)
            if callable(close):
                close()
        if cache is not None:
            cache.close()


def _run_costs(cache: Any, t_run: float) -> dict[str, float]:
    """What the run itself cost: wall time, and the cache's hits and misses per stage."""
    out = {"run_wall_s": time.perf_counter() - t_run}
    if cache is not None:
        out.update(cache.stats())
    return out


def refuse_seen_items(probes: Any, datasets: Sequence[EvalDataset], *,
                      what: str = "probes") -> None:
    """Refuse a run whose (shipped) probes or fine-tuned encoder were fitted on items it
    would report.

    Why: a number fit on the rows it is reported on is not a result. The probes `make run`
    ships are refit on every labelled row; an evaluation must train its own in the run
    (`--train-probes`, cross-fitted on the evaluated sets) or report sets they never saw. The
    same holds for the fine-tuned text encoder: report with one trained on train splits only
    (`eval fine-tune --alias report`, `CHILDGUARD_MODELS__TUNED_ENCODER=report`)."""
    seen = set(getattr(probes, "trained_on", ()) or ())
    if not seen:
        return
    overlap = {ds.name: sum(1 for it in ds if it.id in seen) for ds in datasets}
    overlap = {k: v for k, v in overlap.items() if v}
    if overlap:
        sizes = {ds.name: len(ds) for ds in datasets}
        where = ", ".join(f"{k}: {v} of {sizes[k]}" for k, v in sorted(overlap.items()))
        fix = ("Train probes in the run (--train-probes SET --cross-fit 5) or evaluate sets "
               "the probes never saw" if what == "probes" else
               "Use an encoder trained without them (eval fine-tune on train splits, "
               "--alias report; CHILDGUARD_MODELS__TUNED_ENCODER=report) or evaluate sets it "
               "never saw")
        raise UserError(
            f"the pipeline's {what} ({getattr(probes, 'model_version', '?')}) were trained on "
            f"items this run would report ({where}); a number fit on the rows it reports is "
            f"not a result. {fix}")


def log_artifacts(preds: Sequence[Prediction], codes: Sequence[str],
                  metrics: Mapping[str, float]) -> None:
    """predictions.jsonl (ids only), metrics.json, PR curves and confusion matrices (PNG)."""
    import tempfile

    import mlflow

    from childguard.evaluation import plots, tracking

    with tempfile.TemporaryDirectory(prefix="childguard-eval-") as tmp:
        path = write_predictions(preds, Path(tmp) / PREDICTIONS_FILE)
        mlflow.log_artifact(str(path))
    tracking.log_json(dict(metrics), "metrics.json")
    for ds in sorted({p.dataset for p in preds}):
        rows = [p for p in preds if p.dataset == ds]
        fig = plots.pr_curves({ds: rows}, codes, title=f"PR curves: {ds}")
        if fig is not None:
            mlflow.log_figure(fig, f"plots/pr_{ds}.png")
            plots.close(fig)
        fig = plots.confusion(rows, title=f"decisions: {ds}")
        mlflow.log_figure(fig, f"plots/confusion_{ds}.png")
        plots.close(fig)


def summary_line(metrics: Mapping[str, float], keys: Iterable[str]) -> str:
    parts = []
    for k in keys:
        v = metrics.get(k)
        parts.append(f"{k}={v:.4f}" if v is not None and math.isfinite(v) else f"{k}=n/a")
    return "  ".join(parts)
