"""Assembly: every component of a `Pipeline` built from settings, in one place.

Why: the CLI, evaluation, benchmarks and the Ray app must load the same models the same way
(which probes fit which embedder, which optional models are unavailable and say so), or the
offline numbers are not the service's. Required models (judge, text embedder) that cannot load
raise `ModelUnavailable` (start-up fails loudly); optional ones (CLIP weights, trained probes,
image-safety detectors, OCR) are recorded as unavailable and named in every verdict's
`model_versions`. Building a pipeline (and composing the Ray app) first checks the model
registry (`models/registry.py`, imports verified), so a misnamed implementation fails start-up
by name instead of at the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from childguard.errors import ModelUnavailable
from childguard.models import registry
from childguard.models.base import ImageEmbedder, ImageSignalSource, Judge, Ocr, TextEmbedder
from childguard.models.registry import Role, check_registry
from childguard.pipeline.ports import HashChecker, ProbeModel, embedder_keys
from childguard.pipeline.results import DISABLED, UNAVAILABLE
from childguard.pipeline.stages import Pipeline
from childguard.pipeline.strategies import GatePolicy, ScoreCombiner
from childguard.policy import Policy
from childguard.settings import Settings

__all__ = ["Models", "bare_pipeline", "build_clip", "build_hashes",
           "build_image_sources", "build_judge_for", "build_ocr", "build_pipeline",
           "build_text_embedder_for", "load_policy", "load_probes"]

log = logging.getLogger("childguard.pipeline")

#: which implementations to build: the configured models, or the deterministic references
Models = Literal["real", "reference"]


def build_pipeline(
    settings: Settings,
    *,
    policy: Policy | None = None,
    judge: Judge | None = None,
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
    engine: Any = None,
    with_judge: bool = True,
    models: Models = "real",
    follow_active: bool | None = None,
    calibrated: bool | None = None,
) -> Pipeline:
    """Build every component not given from `settings`; `models="reference"` builds the
    deterministic reference models instead (tests, demos, the serving benchmark), as the Ray
    app does with the same argument.

    Required models (judge, text embedder) that cannot load raise `ModelUnavailable` (start-up
    fails loudly). Optional ones (CLIP weights, trained probes, image-safety detectors, OCR)
    are recorded as unavailable and named in every verdict's `model_versions`. `engine` is
    the SQLAlchemy engine holding the hash banks (default: `settings.db_url`, migrated).
    `with_judge=False` leaves the LLM stage out (evaluation's `--judge none`): the verdict
    then rests on hashes and probes, and an item they cannot score goes to review.
    `follow_active` (default: when the policy comes from settings) makes the pipeline follow
    promotions and rollbacks of its policy (`policy_versions.ActiveFollower`). `calibrated`
    (default: when probes are loaded) decides on calibration.yaml's thresholds.
    """
    from childguard.normalize import normalize_text

    check_registry(verify_imports=True)
    unavailable: dict[str, str] = {}
    if follow_active is None:
        follow_active = policy is None
    if policy is None:
        policy = load_policy(settings)
    if judge is None and with_judge:
        judge = build_judge_for(settings, policy, models)
    if hashes is None:
        hashes = build_hashes(settings, engine)
    if text_embedder is None:
        text_embedder = build_text_embedder_for(settings, models)
    if image_embedder is None:
        image_embedder, missing = build_clip(settings, models)
        unavailable.update(missing)
    if image_safety is None:
        image_safety, missing = build_image_sources(settings, models)
        unavailable.update(missing)
    if ocr is None:
        ocr, missing = build_ocr(settings, models)
        unavailable.update(missing)
    if probes is None:
        probes = load_probes(settings, text_embedder)
    return Pipeline(
        settings=settings,
        policy=policy,
        judge=judge,
        normalizer=normalize_text,
        hashes=hashes,
        text_embedder=text_embedder,
        image_embedder=image_embedder,
        image_safety=image_safety,
        ocr=ocr,
        probes=probes,
        gate_policy=gate_policy,
        combiner=combiner,
        media_loader=media_loader,
        concept_calibrator=concept_calibrator,
        probe_context_messages=probe_context_messages,
        unavailable=unavailable,
        follow_active=follow_active,
        calibrated=calibrated,
    )


def bare_pipeline(settings: Settings, policy: Policy, **components: Any) -> Pipeline:
    """A Pipeline holding only the components one Ray deployment runs (the rest absent)."""
    from childguard.normalize import normalize_text

    return Pipeline(settings=settings, policy=policy, judge=components.pop("judge", None),
                    normalizer=normalize_text, **components)


def load_policy(settings: Settings) -> Policy:
    """The configured policy's active version (the promoted one, else the shipped folder),
    with the thresholds `childguard eval calibrate` wrote beside it."""
    from childguard.policy_versions import load_active_policy

    return load_active_policy(settings)


def _name(models: Models, real: str) -> str:
    """The registry name to build: the deterministic reference, or the real implementation."""
    return "reference" if models == "reference" else real


def build_judge_for(settings: Settings, policy: Policy, models: Models = "real") -> Judge:
    """The configured judge backend (`judge.backend`, through the registry), or the reference."""
    if models == "reference":
        judge: Judge = registry.build(Role.JUDGE, "reference", settings, policy)
        return judge
    from childguard.models.judge import build_judge

    return build_judge(settings, policy)


def build_text_embedder_for(settings: Settings, models: Models = "real") -> TextEmbedder:
    """The text encoder the probes read (`embedders.build_text_embedder`: the sentence model
    plus the age-indicator features), or the reference."""
    if models == "reference":
        ref: TextEmbedder = registry.build(Role.TEXT_EMBEDDER, "reference", settings)
        return ref
    from childguard.models.embedders import build_text_embedder

    return build_text_embedder(settings)


def build_clip(settings: Settings,
               models: Models = "real") -> tuple[ImageEmbedder | None, dict[str, str]]:
    """CLIP, or None and why: without weights image decisions rely on the other signals."""
    try:
        clip: ImageEmbedder = registry.build(Role.IMAGE_EMBEDDER, _name(models, "open_clip"),
                                             settings)
    except ModelUnavailable as exc:
        log.warning("CLIP unavailable, image decisions use the other signals: %s", exc)
        return None, {"clip": UNAVAILABLE}
    return clip, {}


def build_image_sources(
    settings: Settings, models: Models = "real"
) -> tuple[list[ImageSignalSource], dict[str, str]]:
    """The image-safety detectors that load, and the ones that are unavailable or disabled."""
    if models == "reference":
        return [registry.build(Role.IMAGE_SIGNAL, "reference", settings)], {}
    if not settings.models.image_safety:
        return [], {"image_safety": DISABLED}
    # every real detector of the registry that loads; the others named as unavailable
    sources: list[ImageSignalSource] = []
    unavailable: dict[str, str] = {}
    for impl in registry.implementations(Role.IMAGE_SIGNAL, include_reference=False):
        try:
            sources.append(registry.build(Role.IMAGE_SIGNAL, impl.name, settings))
        except ModelUnavailable as exc:
            log.warning("image-safety model %s unavailable: %s", impl.name, exc)
            unavailable[impl.name] = UNAVAILABLE
    return sources, unavailable


def build_ocr(settings: Settings, models: Models = "real") -> tuple[Ocr | None, dict[str, str]]:
    if models != "reference" and not settings.models.ocr:
        return None, {"ocr": DISABLED}
    try:
        ocr: Ocr = registry.build(Role.OCR, _name(models, "rapidocr"), settings)
    except ModelUnavailable as exc:
        log.warning("OCR unavailable: %s", exc)
        return None, {"ocr": UNAVAILABLE}
    return ocr, {}


def build_hashes(settings: Settings, engine: Any) -> HashChecker | None:
    from childguard.hashing.service import HashService
    from childguard.store.db import make_engine
    from childguard.store.migrate import migrate

    if engine is None:
        engine = make_engine(settings.db_url)
        migrate(engine)
    service: HashChecker = HashService.from_settings(settings, engine)
    return service


def load_probes(settings: Settings, text_embedder: TextEmbedder) -> ProbeModel | None:
    """The default probe set trained on this text embedder (under any name it goes by), or
    None, with a warning: the gate then sends every item to the judge."""
    from childguard.models.probes import ProbeSet

    for key in embedder_keys(text_embedder):
        loaded = ProbeSet.load_default(settings, embedder=key)
        if loaded is not None:
            return loaded
    log.warning("no trained probes for text embedder %s in %s; the gate judges everything "
                "and the policy's own thresholds decide, not calibration.yaml's",
                text_embedder.model_version, settings.probes_dir)
    return None
