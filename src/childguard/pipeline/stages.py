"""The stages of the cascade on one set of components: prepare, hash, signals, gate, judge.

Why: each stage is a method that never raises for model trouble (it returns a result with
`status=error`); the hosts only decide where a stage runs (a local thread or a Ray
deployment), through `cascade.run_cascade`, which owns the order and the fail-closed rules.
`Pipeline.classify` is the in-process host. Components come from `assembly.build_pipeline`
(or are passed explicitly by tests); `None` means a component is absent.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from childguard.content import check_text
from childguard.errors import ChildguardError, ModelUnavailable
from childguard.models.base import (
    ImageEmbedder,
    ImageSignalSource,
    Judge,
    JudgeInput,
    Ocr,
    TextEmbedder,
)
from childguard.pipeline.cascade import LocalRunner, run_cascade, run_sync
from childguard.pipeline.decide import Decider
from childguard.pipeline.ports import HashChecker, ProbeModel, embedder_keys, probe_version
from childguard.pipeline.prepare import prepare_item, word_windows
from childguard.pipeline.results import (
    DISABLED,
    UNAVAILABLE,
    GateResult,
    HashResult,
    JudgeResult,
    PreparedItem,
    SignalResult,
    ms_since,
    redactor_for,
    stage_exception,
)
from childguard.pipeline.strategies import (
    COMBINERS,
    GatePolicy,
    ScoreCombiner,
    ThresholdGate,
    clip01,
)
from childguard.policy import Policy
from childguard.policy_versions import ActiveFollower
from childguard.rules import RuleHit
from childguard.schema import ContentItem, Signal, Status, Verdict
from childguard.settings import Settings

__all__ = ["Pipeline"]

log = logging.getLogger("childguard.pipeline")


class Pipeline:
    """The cascade's stages. Build it with `assembly.build_pipeline`; components given
    explicitly are used as is (`None` means the component is absent, e.g. no OCR)."""

    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        judge: Judge | None,
        normalizer: Callable[[str], str],
        hashes: HashChecker | None = None,
        text_embedder: TextEmbedder | None = None,
        image_embedder: ImageEmbedder | None = None,
        image_safety: ImageSignalSource | Sequence[ImageSignalSource] | None = None,
        ocr: Ocr | None = None,
        probes: ProbeModel | None = None,
        gate_policy: GatePolicy | None = None,
        combiner: ScoreCombiner | None = None,
        media_loader: Callable[[str], bytes | None] | None = None,
        concept_calibrator: Callable[[str, float], float] | None = None,
        probe_context_messages: int | None = None,
        unavailable: Mapping[str, str] | None = None,
        stage_timeout_s: float | None = None,
        follow_active: bool = False,
        calibrated: bool | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.probes = probes
        #: decide on the thresholds of calibration.yaml (fitted on probe scores): True/False,
        #: or None = exactly when probes are loaded (a Ray ingress holds no probes and passes
        #: what its embedder deployment reports)
        self._calibrated = calibrated
        #: the policy as given (or as last promoted); `self.policy` is what decides
        self._given_policy = policy
        policy = self._thresholds_for_probes(policy)
        self.policy = policy
        self.judge = judge
        self.normalize = normalizer
        self.hashes = hashes
        self.text_embedder = text_embedder
        self.image_embedder = image_embedder
        if image_safety is None:
            self.image_safety: tuple[ImageSignalSource, ...] = ()
        elif isinstance(image_safety, ImageSignalSource):
            self.image_safety = (image_safety,)
        else:
            self.image_safety = tuple(image_safety)
        self.ocr = ocr
        self.gate_policy = gate_policy or ThresholdGate()
        self._combiner_given = combiner is not None
        self.combiner = combiner or COMBINERS[policy.spec.judge.combine]()
        #: the service's pipelines follow promotions and rollbacks of their policy (checked at
        #: most every `workbench.reload_interval_s`); evaluation and draft pipelines do not
        self._follower = (ActiveFollower(settings, policy,
                                         interval_s=settings.workbench.reload_interval_s)
                          if follow_active else None)
        self.media_loader = media_loader
        #: (category code, CLIP cosine similarity) -> calibrated probability; None = uncalibrated
        self.concept_calibrator = concept_calibrator
        #: also score the last N context messages plus the message as one text ("conversation"),
        #: as `eval train-probes` trains on them (default: settings.models.probe_context_messages)
        self.probe_context_messages = (
            settings.models.probe_context_messages if probe_context_messages is None
            else probe_context_messages
        )
        #: also score half-overlapping windows of this many words of a longer message
        self.probe_window_words = settings.models.probe_window_words
        self.video_seconds_per_hash = settings.hashing.video_seconds_per_hash
        self.unavailable: dict[str, str] = dict(unavailable or {})
        if image_embedder is None and "clip" not in self.unavailable:
            self.unavailable["clip"] = UNAVAILABLE
        if probes is None and "probes" not in self.unavailable:
            self.unavailable["probes"] = UNAVAILABLE
        if judge is None and "judge" not in self.unavailable:
            self.unavailable["judge"] = DISABLED
        if hashes is None and "hashing" not in self.unavailable:
            self.unavailable["hashing"] = DISABLED
        self.stage_timeout_s = (
            settings.serve.stage_timeout_s if stage_timeout_s is None else stage_timeout_s
        )
        if probes is not None and text_embedder is not None:
            self._check_probe_embedder(probes, text_embedder)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # CPU models are not assumed thread-safe: a timed-out call may still be running in its
        # worker thread, and the next call must not enter the same model concurrently (it waits,
        # and times out in turn -> review, which is the fail-closed outcome we want)
        self._model_lock = {name: threading.Lock() for name in ("hash", "signals", "judge")}

    def follow_active(self) -> None:
        """Switch to the policy's newly active version, if one was promoted or rolled back
        (a no-op for pipelines that do not follow, and between checks)."""
        if self._follower is None:
            return
        try:
            policy = self._follower.poll()
        except Exception as exc:  # a bad pointer must not stop classification
            log.warning("policy follower: %s", f"{type(exc).__name__}: {exc}"[:300])
            return
        if policy is not None:
            self.use_policy(policy)
            log.info("policy %s: now version %s", policy.id, policy.version)

    def use_policy(self, policy: Policy) -> None:
        """Classify by another version of the same policy from the next item on (a promotion
        or rollback): rules, thresholds, gate, combiner and the judge's prompt follow it.
        Items already past a stage finish with what they started with at that stage."""
        if policy.id != self.policy.id:
            raise ValueError(f"this pipeline serves policy {self.policy.id!r}; received "
                             f"{policy.id!r}")
        self._given_policy = policy
        policy = self._thresholds_for_probes(policy)
        combiner = (self.combiner if self._combiner_given
                    else COMBINERS[policy.spec.judge.combine]())
        if self.judge is not None:
            with self._model_lock["judge"]:
                self.judge.use_policy(policy)
        self.combiner = combiner
        self.policy = policy

    def _thresholds_for_probes(self, policy: Policy) -> Policy:
        """`policy`, or its uncalibrated form when this pipeline decides without probes: the
        calibrated thresholds (often near 0 for fine-tuned probes) would send every item the
        judge scores to review."""
        calibrated = self.probes is not None if self._calibrated is None else self._calibrated
        # no log here: every Ray deployment holds a pipeline, most without probes;
        # `assembly.load_probes` warns once where probes are missing
        return policy if calibrated else policy.without_calibration()

    def use_probes(self, probes: ProbeModel) -> None:
        """Score text with `probes` from now on (evaluation swaps in out-of-fold probe sets).
        They must fit the text embedder, as at construction."""
        if self.text_embedder is not None:
            self._check_probe_embedder(probes, self.text_embedder)
        had_probes = self.probes is not None
        self.probes = probes
        self.unavailable.pop("probes", None)
        if not had_probes and self._given_policy is not self.policy:
            self.use_policy(self._given_policy)  # the calibrated thresholds apply again

    def _check_probe_embedder(self, probes: ProbeModel, embedder: TextEmbedder) -> None:
        """Probes only mean something on the embedder they were trained on."""
        pdim = getattr(probes, "dim", None)
        edim = getattr(embedder, "dim", None)
        if pdim is not None and edim is not None and int(pdim) != int(edim):
            raise ModelUnavailable(
                f"probes {probe_version(probes)} expect {pdim}-dimensional embeddings from "
                f"{probes.embedder!r}, but the text embedder {embedder.model_version!r} gives "
                f"{edim}; retrain the probes (childguard eval train-probes) or configure the "
                "matching embedder"
            )
        if probes.embedder not in embedder_keys(embedder):
            log.warning(
                "probes %s were trained on embedder %r; the text embedder is %r",
                probe_version(probes), probes.embedder, embedder.model_version,
            )

    def close(self, wait_s: float | None = None) -> None:
        """Release the judge. A timed-out judge call may still be running on its worker thread:
        closing the model under it would crash the process, so wait for it (up to `wait_s`,
        default the stage timeout) and leave the model open if it does not finish."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self.judge is not None:
            lock = self._model_lock["judge"]
            wait = self.stage_timeout_s if wait_s is None else wait_s
            if lock.acquire(timeout=wait):
                try:
                    self.judge.close()
                finally:
                    lock.release()
            else:
                log.warning("the judge is still busy after %g s; leaving it open", wait)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model_versions(self) -> dict[str, str]:
        """Every configured model and its version, and the unavailable/disabled ones."""
        versions = dict(self.unavailable)
        if self.judge is not None:
            versions["judge"] = self.judge.model_version
        if self.text_embedder is not None:
            versions["text_embedder"] = self.text_embedder.model_version
        if self.probes is not None:
            versions["probes"] = probe_version(self.probes)
        if self.image_embedder is not None:
            versions["clip"] = self.image_embedder.model_version
        for src in self.image_safety:
            versions.update(src.versions())
        if self.ocr is not None:
            versions["ocr"] = self.ocr.model_version
        return versions

    # -- stage 0: prepare --------------------------------------------------------------------
    def prepare(self, item: ContentItem) -> PreparedItem:
        """Input checks, image decode, text normalisation. Raises `UserError` for bad input."""
        return prepare_item(item, self.limits, self.normalize, self.media_loader,
                            video_seconds_per_hash=self.video_seconds_per_hash)

    # -- stage 1: hash match -----------------------------------------------------------------
    def hash_stage(self, item: PreparedItem) -> HashResult:
        """Match the image or video against the hash banks. Never raises."""
        if item.image_bytes is None and item.video is None:
            return HashResult(status=Status.SKIPPED, note="no image or video")
        if self.hashes is None:
            return HashResult(status=Status.SKIPPED, note="no hash banks configured")
        t0 = time.perf_counter()
        try:
            with self._model_lock["hash"]:
                if item.video is not None:
                    check = self.hashes.check_video(item.video)
                    hashes = {f"video_{k}": v for k, v in check.hashes.items()}
                    hashes["vpdq_frames"] = str(len(item.video.frames))
                    version = "vpdq+md5+sha256"
                else:
                    assert item.image_bytes is not None
                    check = self.hashes.check(item.image_bytes)
                    hashes, version = dict(check.hashes), "pdq+md5+sha256"
            return HashResult(
                matches=tuple(check.matches),
                decisive=check.decisive,
                suppressed=tuple(check.suppressed),
                hashes=hashes,
                pdq_quality=check.pdq_quality,
                pdq_used=check.pdq_used,
                note=check.note,
                elapsed_ms=ms_since(t0),
                versions={"hashing": version},
            )
        except Exception as exc:
            return stage_exception(HashResult, item, exc, t0)

    # -- stage 2: cheap signals --------------------------------------------------------------
    def signal_stage(self, item: PreparedItem) -> SignalResult:
        """Probes on the text, CLIP concepts, image-safety detectors, OCR. Never raises."""
        return self.signal_stage_batch([item])[0]

    def signal_stage_batch(self, items: Sequence[PreparedItem]) -> list[SignalResult]:
        """The signal stage for several items, with one embedder call for all their texts.
        A failure fails every item of the batch (closed)."""
        if not items:
            return []
        t0 = time.perf_counter()
        try:
            with self._model_lock["signals"]:
                results = self._signals(items)
        except Exception as exc:
            elapsed = ms_since(t0) / len(items)
            return [stage_exception(SignalResult, it, exc, None, elapsed) for it in items]
        return results

    def _signals(self, items: Sequence[PreparedItem]) -> list[SignalResult]:
        t_batch = time.perf_counter()
        per_item: list[dict[str, Any]] = []
        # (item index, part label, normalised text) for one batched embedder call
        texts: list[tuple[int, str, str]] = []
        for idx, item in enumerate(items):
            state: dict[str, Any] = {
                "signals": [], "probe": {}, "ocr": None, "versions": {}, "image_covered": False,
            }
            per_item.append(state)
            if item.normalized:
                texts.append((idx, "text", item.normalized))
                texts += [(idx, "window", w)
                          for w in word_windows(item.normalized, self.probe_window_words)]
                if self.probe_context_messages > 0 and item.context:
                    recent = [m.text for m in item.context[-self.probe_context_messages :]]
                    joined = self.normalize(" \n ".join([*recent, item.text or ""]))
                    texts.append((idx, "conversation", joined))
            if item.image is not None:
                self._image_signals(item.image, state)
            elif item.keyframes:
                self._keyframe_signals(item, state)
            if state["ocr"]:
                texts.append((idx, "ocr", self.normalize(state["ocr"])))
            state["rules"] = self._rule_signals(item, state)
        text_covered: set[int] = set()
        if texts and self.text_embedder is not None:
            t0 = time.perf_counter()
            embs = self.text_embedder.embed_texts([t for _, _, t in texts])
            embed_ms = ms_since(t0) / len(texts)
            for idx, _, _ in texts:
                per_item[idx]["versions"]["text_embedder"] = self.text_embedder.model_version
            if self.probes is not None:
                t0 = time.perf_counter()
                preds = self.probes.predict(np.asarray(embs))
                probe_ms = ms_since(t0) / len(texts)
                for row, (idx, label, _) in enumerate(texts):
                    state = per_item[idx]
                    state["versions"]["probes"] = probe_version(self.probes)
                    text_covered.add(idx)
                    for code, arr in preds.items():
                        score = clip01(float(np.asarray(arr).reshape(-1)[row]))
                        state["signals"].append(Signal(
                            name=f"probe.{label}", category=code, score=score,
                            model=probe_version(self.probes),
                            elapsed_ms=round(embed_ms + probe_ms, 3),
                        ))
                        state["probe"][code] = max(score, state["probe"].get(code, 0.0))
        batch_ms = ms_since(t_batch) / len(items)
        results = []
        for idx, state in enumerate(per_item):
            results.append(SignalResult(
                signals=tuple(state["signals"]),
                probe_scores=dict(state["probe"]),
                text_covered=idx in text_covered and items[idx].has_text,
                image_covered=bool(state["image_covered"]),
                ocr_text=state["ocr"],
                rule_hits=state["rules"],
                elapsed_ms=round(batch_ms, 3),
                versions=dict(state["versions"]),
            ))
        return results

    def _rule_signals(self, item: PreparedItem, state: dict[str, Any]) -> tuple[RuleHit, ...]:
        """The policy's rules on the message, its conversation and OCR text: a `rule.<id>`
        signal per hit (no score: a rule is a floor, not a probability; `rules.py`)."""
        rules = self.policy.rules
        if not len(rules):
            return ()
        t0 = time.perf_counter()
        hits = rules.match(item.text, context=[m.text for m in item.context],
                           ocr_text=state["ocr"])
        elapsed = ms_since(t0)
        for h in hits:
            state["signals"].append(Signal(
                name=f"rule.{h.rule}", category=h.category, model="policy-rules",
                elapsed_ms=round(elapsed, 3),
                detail={"floor": h.floor, "where": h.where, "lists": ",".join(h.lists)},
            ))
        return hits

    def _keyframe_signals(self, item: PreparedItem, state: dict[str, Any]) -> None:
        """A video's keyframes through the image signals, one after another: every signal
        names its frame (`detail.frame_s`), category scores keep each frame's highest, OCR
        text of the frames is joined (distinct lines, in time order) for the probes, rules and
        judge. The verdict's signals thus say which frames drove it."""
        ocr_parts: list[str] = []
        for kf in item.keyframes:
            frame_state: dict[str, Any] = {
                "signals": [], "probe": state["probe"], "ocr": None,
                "versions": state["versions"], "image_covered": False,
            }
            self._image_signals(kf.image, frame_state)
            state["image_covered"] = state["image_covered"] or frame_state["image_covered"]
            for sig in frame_state["signals"]:
                state["signals"].append(sig.model_copy(
                    update={"detail": {**sig.detail, "frame_s": kf.timestamp}}))
            if frame_state["ocr"] and frame_state["ocr"] not in ocr_parts:
                ocr_parts.append(frame_state["ocr"])
        if ocr_parts:
            state["ocr"] = check_text("\n".join(ocr_parts)[: self.limits.max_text_chars],
                                      self.limits, field="ocr text")

    def _image_signals(self, image: Image.Image, state: dict[str, Any]) -> None:
        signals: list[Signal] = state["signals"]
        versions: dict[str, str] = state["versions"]
        if self.ocr is not None:
            t0 = time.perf_counter()
            found = (self.ocr.read(image) or "").strip()
            versions["ocr"] = self.ocr.model_version
            signals.append(Signal(
                name="ocr", model=self.ocr.model_version, elapsed_ms=ms_since(t0),
                detail={"chars": len(found)},
            ))
            if found:
                state["ocr"] = check_text(found[: self.limits.max_text_chars], self.limits,
                                          field="ocr text")
        for src in self.image_safety:
            t0 = time.perf_counter()
            produced = list(src.signals(image))
            versions.update(src.versions())
            for s in produced:
                signals.append(s)
                if s.score is not None and s.status is Status.OK:
                    state["image_covered"] = True
        if self.image_embedder is not None:
            t0 = time.perf_counter()
            emb = self.image_embedder.embed_images([image])
            versions["clip"] = self.image_embedder.model_version
            concept_fn = getattr(self.image_embedder, "concept_scores", None)
            if concept_fn is not None:
                for cat in self.policy.spec.categories:
                    if not cat.clip_concepts or "image" not in cat.applies_to:
                        continue
                    sims = np.asarray(concept_fn(emb, list(cat.clip_concepts))).reshape(-1)
                    cosine = float(sims.max())
                    if not math.isfinite(cosine):
                        raise ValueError("CLIP concept similarity is not a finite number")
                    # a cosine similarity is not a probability: it only becomes a score (for
                    # the gate and the thresholds) through a calibration fitted on labelled data
                    score = None
                    if self.concept_calibrator is not None:
                        score = clip01(self.concept_calibrator(cat.code, cosine))
                        state["probe"][cat.code] = max(score, state["probe"].get(cat.code, 0.0))
                        state["image_covered"] = True
                    signals.append(Signal(
                        name="clip.concept", category=cat.code, score=score,
                        model=self.image_embedder.model_version, elapsed_ms=ms_since(t0),
                        detail={"cosine": round(cosine, 4), "calibrated": score is not None},
                    ))

    # -- stage 3: gate -----------------------------------------------------------------------
    def gate(self, item: PreparedItem, signals: SignalResult) -> GateResult:
        """Whether the cheap signals settle the item as benign. Never raises."""
        t0 = time.perf_counter()
        try:
            result = self.gate_policy.evaluate(
                self.policy, item, signals, probes_loaded=self.probes is not None
            )
        except Exception as exc:
            return stage_exception(GateResult, item, exc, t0)
        return GateResult(
            allowed=result.allowed, reason=result.reason, max_score=result.max_score,
            status=result.status, error=result.error, elapsed_ms=ms_since(t0),
        )

    # -- stage 4: judge ----------------------------------------------------------------------
    def judge_input(self, item: PreparedItem, signals: SignalResult | None) -> JudgeInput:
        """What the judge sees: original and normalised text, context, OCR text."""
        return JudgeInput(
            item_id=item.item_id,
            text=item.text,
            normalized=item.normalized,
            context=item.context,
            ocr_text=signals.ocr_text if signals is not None else None,
            has_image=item.has_image,
        )

    def judge_stage(self, item: PreparedItem, signals: SignalResult | None) -> JudgeResult:
        """Ask the policy-prompted judge. Never raises; a judge error is `status=error`."""
        return self.judge_stage_batch([item], [signals])[0]

    def judge_stage_batch(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult | None]
    ) -> list[JudgeResult]:
        if not items:
            return []
        if self.judge is None:
            return [JudgeResult(status=Status.SKIPPED) for _ in items]
        self.follow_active()
        t0 = time.perf_counter()
        inputs = [self.judge_input(it, s) for it, s in zip(items, signals, strict=True)]
        try:
            with self._model_lock["judge"]:
                outputs = (
                    [self.judge.judge(inputs[0])] if len(inputs) == 1
                    else self.judge.judge_batch(inputs)
                )
            if len(outputs) != len(inputs):
                raise RuntimeError(
                    f"judge returned {len(outputs)} answers for {len(inputs)} items"
                )
        except Exception as exc:
            elapsed = ms_since(t0) / len(items)
            return [
                stage_exception(JudgeResult, it, exc, None, elapsed, s)
                for it, s in zip(items, signals, strict=True)
            ]
        elapsed = ms_since(t0) / len(items)
        version = {"judge": self.judge.model_version}
        results = []
        for it, sig, out in zip(items, signals, outputs, strict=True):
            redact = redactor_for(it, sig)
            out = out.model_copy(update={"rationale": redact(out.rationale)})
            if out.status is not Status.OK:
                error = redact(out.error or "judge returned status=error without a reason")
                log.warning("judge error for item %s: %s", it.item_id, error)
                results.append(JudgeResult(
                    status=Status.ERROR, error=error, output=out, elapsed_ms=elapsed,
                    versions=version,
                ))
            else:
                results.append(JudgeResult(output=out, elapsed_ms=elapsed, versions=version))
        return results


    def signals_and_gate(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]:
        """The signal stage, then the gate for each item whose signals all ran. A failed signal
        stage or detector gets no gate result: the item is decided as an error (review)
        without spending a judge call, on either host."""
        self.follow_active()
        return [
            (s, self.gate(it, s) if s.ok and not s.failed_signals else None)
            for it, s in zip(items, self.signal_stage_batch(items), strict=True)
        ]

    # -- stage 5: decide ---------------------------------------------------------------------
    def decide(
        self,
        item: PreparedItem,
        *,
        hashes: HashResult | None = None,
        signals: SignalResult | None = None,
        gate: GateResult | None = None,
        judge: JudgeResult | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> Verdict:
        """Turn the stage results into the verdict (`decide.Decider`). Any failed stage gives
        review."""
        self.follow_active()
        return Decider(self.policy, self.combiner, self.unavailable).decide(
            item, hashes=hashes, signals=signals, gate=gate, judge=judge, timings=timings)

    # -- the in-process host -----------------------------------------------------------------
    def classify(self, item: ContentItem) -> Verdict:
        """Classify one item. Raises `UserError` for bad input; never for model trouble."""
        prepared = self.prepare(item)
        return self.run_prepared([prepared])[0]

    def classify_batch(self, items: Sequence[ContentItem]) -> list[Verdict]:
        """Classify several items, batching the embedder and judge calls. A bad item raises
        `UserError` naming its index before anything runs."""
        prepared = []
        for i, item in enumerate(items):
            try:
                prepared.append(self.prepare(item))
            except ChildguardError as exc:
                raise type(exc)(f"items[{i}] (id {item.id}): {exc}") from exc
        return self.run_prepared(prepared)

    def run_prepared(self, items: Sequence[PreparedItem]) -> list[Verdict]:
        """Stages 1-5 for prepared items: the shared cascade, each stage on a worker thread
        bounded by the stage timeout."""
        return run_sync(run_cascade(list(items), LocalRunner(self), self.decide))

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The worker threads the in-process host runs stages on (closed by `close`)."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="childguard-stage"
                )
            return self._executor

