"""The Ray Serve application: an ingress and one deployment per heavy stage.

Why this shape: the pipeline's stages have very different costs and hardware needs (hash
matching is microseconds; the embedder wants a GPU on a cluster; the LLM judge dominates
latency). Each heavy stage is its own deployment, with its own replicas and CPU/GPU share, so a
cluster scales the judge without copying the embedder. The deployments run the *same*
`Pipeline` stage methods as the in-process CLI, in the same order: the ingress runs the shared
cascade (`pipeline.cascade.run_cascade`) with a `RayRunner`, so offline numbers are the
service's numbers:

    Ingress (FastAPI: auth, limits, prepare, gate result -> decide, store)
      -> HashMatcher.hash_stage             (decisive bank hit: models skipped)
      -> Embedder.signals  [@serve.batch]   (text embedder + CLIP + probes, then the gate)
           -> ImageSafety.signals / .read   (NudeNet, OpenNSFW, OCR)
      -> Judge.judge       [@serve.batch]   (policy-prompted LLM; only when the gate says so)

Every remote call is bounded by `settings.serve.stage_timeout_s`; a timeout or a failed replica
becomes a failed stage result, and the cascade's `decide` turns that into review (fail closed).

Configuration flows one way: `build_app(AppArgs)` (the typed app builder that `serve run` and
`serve deploy` call) reads `Settings` and the policy once and binds them to every deployment.
Note: this module must not use `from __future__ import annotations`: Ray inspects the builder's
annotation at run time to validate the arguments into `AppArgs`.
"""

import asyncio
import dataclasses
import logging
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

from childguard.errors import ChildguardError
from childguard.models.base import ImageSignalSource, Ocr
from childguard.models.registry import check_registry
from childguard.pipeline import (
    GateResult,
    HashResult,
    JudgeResult,
    Pipeline,
    PreparedItem,
    SignalResult,
    StageResult,
    describe_exception,
    run_cascade,
    timeout_error,
)
from childguard.pipeline.assembly import (
    Models,
    bare_pipeline,
    build_clip,
    build_hashes,
    build_image_sources,
    build_judge_for,
    build_ocr,
    build_text_embedder_for,
    load_policy,
    load_probes,
)
from childguard.policy import Policy
from childguard.schema import ContentItem, Signal, Verdict
from childguard.settings import Settings

log = logging.getLogger("childguard.serving")

Handle = DeploymentHandle[Any]

APP_NAME = "childguard"


# -- typed arguments ------------------------------------------------------------------------


class DeploymentOptions(BaseModel):
    """Replicas and resources of one deployment."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)

    def ray_options(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "num_replicas": self.num_replicas,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }


class BatchOptions(BaseModel):
    """`@serve.batch` parameters: a batch runs when full or after the wait, whichever first."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, ge=1)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)


class AppArgs(BaseModel):
    """Arguments of `build_app` (the `args:` block of a Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    config_file: str | None = Field(
        default=None, description="childguard TOML settings file (else $CHILDGUARD_CONFIG)"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="settings overrides, e.g. {'judge': {'backend': 'openai', 'url': ...}}",
    )
    models: Literal["real", "reference"] = Field(
        default="real",
        description="'reference' uses the package's deterministic reference models (tests, "
        "demos); never in production",
    )
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.2)
    hash_matcher: DeploymentOptions = DeploymentOptions(num_cpus=0.1)
    embedder: DeploymentOptions = DeploymentOptions(num_cpus=0.5)
    image_safety: DeploymentOptions = DeploymentOptions(num_cpus=0.25)
    judge: DeploymentOptions = DeploymentOptions(num_cpus=0.5)
    hash_refresh_s: float = Field(
        default=10.0, gt=0, description="how often the matcher picks up hash-bank changes"
    )
    # no extra wait by default: a lone request would pay the whole wait, and under load the
    # requests that arrive while a batch runs form the next batch anyway
    embedder_batch: BatchOptions = BatchOptions(max_batch_size=32, batch_wait_timeout_s=0.0)
    judge_batch: BatchOptions = BatchOptions(max_batch_size=4, batch_wait_timeout_s=0.0)

    def load_settings(self) -> Settings:
        return Settings.load(Path(self.config_file) if self.config_file else None,
                             **self.settings)


def _info(pipeline: Pipeline, own: Sequence[str]) -> dict[str, dict[str, str]]:
    """What a deployment reports: versions of its models, and which of its roles are absent."""
    versions = pipeline.model_versions
    mine = {k: v for k, v in versions.items() if k not in pipeline.unavailable}
    unavailable = {k: v for k, v in pipeline.unavailable.items() if k in own}
    return {"versions": mine, "unavailable": unavailable}


# -- stage deployments ------------------------------------------------------------------------


@serve.deployment
class HashMatcher:
    """Exact and perceptual hash matching against the banks in the store."""

    def __init__(self, settings: Settings, policy: Policy, refresh_s: float = 10.0) -> None:
        hashes: Any = None
        self._refresh_s = refresh_s
        self._refreshed = time.monotonic()
        self._unavailable: dict[str, str] = {}
        try:
            hashes = build_hashes(settings, None)
        except ModuleNotFoundError as exc:  # the hashing extra (pdqhash) is not installed
            log.warning("hash matching unavailable: %s", exc)
            self._unavailable["hashing"] = "unavailable"
        self.hashes = hashes
        self.pipeline = bare_pipeline(settings, policy, hashes=hashes)

    def hash_stage(self, item: PreparedItem) -> HashResult:
        if self.hashes is not None and time.monotonic() - self._refreshed > self._refresh_s:
            self.refresh()
        return self.pipeline.hash_stage(item)

    def refresh(self) -> None:
        """Pick up bank changes other processes made (`childguard hashes add`, removals)."""
        self._refreshed = time.monotonic()
        if self.hashes is not None:
            try:
                self.hashes.refresh()
            except Exception as exc:  # matching goes on with the banks already loaded
                log.warning("hash bank refresh failed: %s", type(exc).__name__)

    def info(self) -> dict[str, dict[str, str]]:
        return {"versions": {"hashing": "pdq+md5+sha256"} if not self._unavailable else {},
                "unavailable": dict(self._unavailable)}


@serve.deployment
class ImageSafety:
    """Image-only models: nudity/NSFW detectors and OCR (ONNX, CPU-friendly)."""

    def __init__(self, settings: Settings, models: Models) -> None:
        self.sources, unavailable = build_image_sources(settings, models)
        self.ocr, ocr_unavailable = build_ocr(settings, models)
        self.unavailable = {**unavailable, **ocr_unavailable}

    def signals(self, image: Image.Image) -> list[Signal]:
        out: list[Signal] = []
        for src in self.sources:
            out.extend(src.signals(image))
        return out

    def read(self, image: Image.Image) -> str:
        if self.ocr is None:
            return ""
        return self.ocr.read(image)

    def analyze(self, image: Image.Image) -> tuple[str, list[Signal]]:
        """OCR text and detector signals in one call (see `_ImageCalls`)."""
        return self.read(image), self.signals(image)

    def info(self) -> dict[str, Any]:
        versions = {s.name: s.model_version for s in self.sources}
        if self.ocr is not None:
            versions["ocr"] = self.ocr.model_version
        return {
            "versions": versions,
            "unavailable": dict(self.unavailable),
            "has_sources": bool(self.sources),
            "has_ocr": self.ocr is not None,
        }


class _ImageCalls:
    """One round trip per image to the ImageSafety deployment.

    The pipeline asks for OCR first and the detector signals next, for the same image object;
    the OCR proxy fetches both in one call (`analyze`) and parks the signals here until the
    detector proxy asks for them, saving a second hop (and a second copy of the pixels).
    """

    def __init__(self, handle: Handle, timeout_s: float, *, combined: bool) -> None:
        self.handle = handle
        self.timeout_s = timeout_s
        self.combined = combined  # False when there are no detectors to ask for
        self._parked: dict[int, list[Signal]] = {}
        self._lock = threading.Lock()

    def analyze(self, image: Image.Image) -> str:
        if not self.combined:
            return str(self.handle.read.remote(image).result(timeout_s=self.timeout_s))
        text, signals = self.handle.analyze.remote(image).result(timeout_s=self.timeout_s)
        with self._lock:
            self._parked[id(image)] = signals
        return str(text)

    def signals(self, image: Image.Image) -> list[Signal]:
        with self._lock:
            parked = self._parked.pop(id(image), None)
        if parked is not None:
            return parked
        result: list[Signal] = self.handle.signals.remote(image).result(timeout_s=self.timeout_s)
        return result


class RemoteImageSafety(ImageSignalSource):
    """The ImageSafety deployment seen as one ImageSignalSource (called from a worker thread)."""

    name = "image_safety"

    def __init__(self, calls: _ImageCalls, versions: dict[str, str]) -> None:
        self._calls = calls
        self._versions = dict(versions)

    @property
    def model_version(self) -> str:
        return "+".join(f"{k}@{v}" for k, v in sorted(self._versions.items()))

    def versions(self) -> dict[str, str]:
        # the detectors behind the deployment, under their own names, as in process
        return dict(self._versions)

    def signals(self, image: Image.Image) -> list[Signal]:
        return self._calls.signals(image)


class RemoteOcr(Ocr):
    name = "ocr"

    def __init__(self, calls: _ImageCalls, version: str) -> None:
        self._calls = calls
        self._version = version

    @property
    def model_version(self) -> str:
        return self._version

    def read(self, image: Image.Image) -> str:
        return self._calls.analyze(image)


def _configure_batch(method: Any, batch: BatchOptions) -> None:
    """Apply AppArgs to a `@serve.batch` method (its decorator defaults are placeholders)."""
    method.set_max_batch_size(batch.max_batch_size)
    method.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)


@serve.deployment
class Embedder:
    """Text embedder + CLIP + probes (the signal stage) and the gate, batched across requests."""

    async def __init__(  # type: ignore[misc]  # Ray Serve supports async constructors
        self, settings: Settings, policy: Policy, models: Models, image_safety: Handle,
        batch: BatchOptions,
    ) -> None:
        text = build_text_embedder_for(settings, models)
        clip, unavailable = build_clip(settings, models)
        probes = load_probes(settings, text)
        timeout = settings.serve.stage_timeout_s
        remote = await image_safety.info.remote()
        calls = _ImageCalls(image_safety, timeout, combined=bool(remote["has_sources"]))
        sources = (RemoteImageSafety(calls, {
            k: v for k, v in remote["versions"].items() if k != "ocr"
        }) if remote["has_sources"] else None)
        ocr = RemoteOcr(calls, remote["versions"].get("ocr", "")) if remote["has_ocr"] else None
        self.pipeline = bare_pipeline(
            settings, policy, text_embedder=text, image_embedder=clip, probes=probes,
            image_safety=sources, ocr=ocr,
            unavailable={**unavailable, **remote["unavailable"]}, follow_active=True,
        )
        _configure_batch(self.signals, batch)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def signals(
        self, items: list[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]:
        return await asyncio.to_thread(self.pipeline.signals_and_gate, items)

    def info(self) -> dict[str, dict[str, str]]:
        return _info(self.pipeline, ("clip", "probes", "text_embedder", "image_safety", "ocr",
                                     "nudenet", "opennsfw"))


@serve.deployment
class JudgeDeployment:
    """The policy-prompted LLM judge, batched across requests."""

    def __init__(self, settings: Settings, policy: Policy, models: Models,
                 batch: BatchOptions) -> None:
        judge = build_judge_for(settings, policy, models)
        self.pipeline = bare_pipeline(settings, policy, judge=judge, follow_active=True)
        _configure_batch(self.judge, batch)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def judge(
        self, requests: list[tuple[PreparedItem, SignalResult | None]]
    ) -> list[JudgeResult]:
        items = [r[0] for r in requests]
        signals = [r[1] for r in requests]
        return await asyncio.to_thread(self.pipeline.judge_stage_batch, items, signals)

    def info(self) -> dict[str, dict[str, str]]:
        return _info(self.pipeline, ("judge",))

    def __del__(self) -> None:
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()


# -- the ingress --------------------------------------------------------------------------------


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


async def _await(response: Any) -> Any:
    return await response


class RayBackend:
    """The API's ClassifyBackend on Ray: prepare here, heavy stages in their deployments
    (`RayRunner`), decide here. The stage order and the fail-closed rules are the shared
    cascade's (`pipeline.cascade.run_cascade`), as in process."""

    def __init__(self, pipeline: Pipeline, handles: dict[str, Handle],
                 timeout_s: float) -> None:
        self.pipeline = pipeline
        self.handles = handles
        self.timeout_s = timeout_s
        self.runner = RayRunner(pipeline, handles, timeout_s)
        self._info_lock = asyncio.Lock()
        self._info: dict[str, dict[str, Any]] | None = None

    async def _deployment_info(self) -> dict[str, dict[str, Any]]:
        async with self._info_lock:
            if self._info is None:
                names = list(self.handles)
                got = await asyncio.wait_for(
                    asyncio.gather(*(_await(self.handles[n].info.remote()) for n in names)),
                    timeout=self.timeout_s,
                )
                info = dict(zip(names, got, strict=True))
                unavailable: dict[str, str] = {}
                for part in info.values():
                    unavailable.update(part.get("unavailable", {}))
                self.pipeline.unavailable = unavailable
                self._info = info
            return self._info

    async def readiness(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            info = await self._deployment_info()
        except Exception as exc:
            self._info = None
            return {"deployments": f"not ready: {type(exc).__name__}: {exc}"[:300]}
        for name, part in info.items():
            out[name] = "ok"
            for role, state in part.get("unavailable", {}).items():
                out[f"{name}.{role}"] = "ok" if state == "disabled" else f"ok ({state})"
        # a deployment answering `info` means its models loaded (constructors load them);
        # an optional model that is absent is reported, but does not make the service unready
        return out

    async def classify(self, items: Sequence[ContentItem]) -> list[Verdict]:
        prepared: list[PreparedItem] = []
        for i, item in enumerate(items):
            try:
                prepared.append(await run_in_threadpool(self.pipeline.prepare, item))
            except ChildguardError as exc:
                if len(items) > 1:
                    raise type(exc)(f"items[{i}]: {exc}") from exc
                raise
        try:
            await self._deployment_info()
        except Exception as exc:  # decide still works; versions are then incomplete
            log.warning("deployment info unavailable: %s", type(exc).__name__)
        return await run_cascade(prepared, self.runner, self.pipeline.decide)


class RayRunner:
    """The cascade's stage runner on Ray Serve: each stage is a call to its deployment,
    bounded by the stage timeout; a timeout or a failed replica becomes the stage's failed
    result (the cascade then decides review). Items travel without what a stage does not
    read: the hash matcher gets the bytes (a video: its frame hashes) and no decoded picture,
    the others the decoded image or keyframes and no bytes."""

    def __init__(self, pipeline: Pipeline, handles: dict[str, Handle], timeout_s: float) -> None:
        self.pipeline = pipeline
        self.handles = handles
        self.timeout_s = timeout_s

    @property
    def has_judge(self) -> bool:
        return "judge" in self.handles

    async def hash(self, items: Sequence[PreparedItem]) -> list[HashResult]:
        return list(await asyncio.gather(*(self._hash(it) for it in items)))

    async def _hash(self, item: PreparedItem) -> HashResult:
        if item.image_bytes is None and item.video is None:
            return self.pipeline.hash_stage(item)  # nothing to hash: no hop
        video = (dataclasses.replace(item.video, keyframes=()) if item.video is not None
                 else None)  # the matcher reads frame hashes, not pictures
        call = self.handles["hash_matcher"].hash_stage.remote(
            dataclasses.replace(item, image=None, video=video))
        got: HashResult = await self._call(HashResult, item, call)
        return got

    async def signals(
        self, items: Sequence[PreparedItem]
    ) -> list[tuple[SignalResult, GateResult | None]]:
        return list(await asyncio.gather(*(self._signals(it) for it in items)))

    async def _signals(self, item: PreparedItem) -> tuple[SignalResult, GateResult | None]:
        got = await self._call(SignalResult, item, self.handles["embedder"].signals.remote(
            dataclasses.replace(item, image_bytes=None)))
        if isinstance(got, SignalResult):  # the call itself failed
            return got, None
        pair: tuple[SignalResult, GateResult | None] = got
        return pair

    async def judge(
        self, items: Sequence[PreparedItem], signals: Sequence[SignalResult]
    ) -> list[JudgeResult]:
        return list(await asyncio.gather(*(
            self._call(JudgeResult, it, self.handles["judge"].judge.remote(
                (dataclasses.replace(it, image_bytes=None), s)))
            for it, s in zip(items, signals, strict=True)
        )))

    async def _call(self, kind: type[StageResult], item: PreparedItem, response: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await asyncio.wait_for(_await(response), timeout=self.timeout_s)
        except TimeoutError:
            response.cancel()
            log.warning("stage %s timed out for item %s", kind.stage, item.item_id)
            return kind.failed(timeout_error(self.timeout_s), _ms(t0))
        except Exception as exc:
            # the client gets a code and a short line; the server log gets the traceback
            redact = item.redactor()
            error = describe_exception(exc, redact)
            # a Ray error's text holds the remote traceback: logged, with content removed
            log.warning("stage %s failed for item %s: %s\n%s%s", kind.stage, item.item_id,
                        error, "".join(traceback.format_tb(exc.__traceback__)), redact(str(exc)))
            return kind.failed(error, _ms(t0))


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP ingress: the FastAPI app of `childguard.serving.api` on the RayBackend."""

    async def __init__(  # type: ignore[misc]  # Ray Serve supports async constructors
        self, settings: Settings, policy: Policy, hash_matcher: Handle, embedder: Handle,
        judge: Handle, image_safety: Handle, models: Models = "real",
    ) -> None:
        from childguard.store.store import Store

        self.settings = settings
        self.models = models
        self.store = Store.from_settings(settings)
        # the decision is made here, on scores the embedder's probes made: the calibrated
        # thresholds apply only when that deployment has probes (Pipeline `calibrated`)
        remote = await embedder.info.remote()
        pipeline = bare_pipeline(settings, policy, follow_active=True,
                                 calibrated="probes" not in remote["unavailable"])
        self.backend = RayBackend(
            pipeline,
            {"hash_matcher": hash_matcher, "embedder": embedder, "judge": judge,
             "image_safety": image_safety},
            timeout_s=settings.serve.stage_timeout_s,
        )

    def __serve_build_asgi_app__(self) -> Any:
        from childguard.serving.api import create_api

        return create_api(self.settings, self.store, self.backend,
                          workbench=build_workbench(self.settings, self.store, self.models))


def build_workbench(settings: Settings, store: Any, models: Models) -> Any:
    """The policy workbench for the ingress: drafts on the store's audit log, and a text
    pipeline for trying drafts, built on the first try (the judge loads then, once)."""
    from childguard.evaluation.runner import build_text_pipeline
    from childguard.policy_versions import load_active_policy
    from childguard.workbench.drafts import Drafts
    from childguard.workbench.pages import Workbench

    return Workbench(settings, Drafts(settings, store),
                     lambda: build_text_pipeline(settings, load_active_policy(settings),
                                                 models=models))


def _bind(deployment: Any, opts: DeploymentOptions, name: str, *init_args: Any) -> Any:
    """`deployment.options(name, replicas, resources).bind(*init_args)`."""
    return deployment.options(**opts.ray_options(name)).bind(*init_args)


def build_app(args: AppArgs) -> Application:
    """The typed app builder: `serve run childguard.serving.app:build_app models=reference`
    or `import_path: childguard.serving.app:build_app` in a Serve config file."""
    if isinstance(args, dict):  # called directly with a dict
        args = AppArgs.model_validate(args)
    return compose(args.load_settings(), args)


def compose(settings: Settings, args: AppArgs | None = None) -> Application:
    """Bind the deployments for `settings` (already read once by the caller)."""
    args = args or AppArgs()
    check_registry(verify_imports=True)  # a misnamed implementation fails here, not later
    policy = load_policy(settings)
    image_safety = _bind(ImageSafety, args.image_safety, "ImageSafety", settings, args.models)
    hash_matcher = _bind(HashMatcher, args.hash_matcher, "HashMatcher", settings, policy,
                         args.hash_refresh_s)
    embedder = _bind(Embedder, args.embedder, "Embedder", settings, policy, args.models,
                     image_safety, args.embedder_batch)
    judge = _bind(JudgeDeployment, args.judge, "Judge", settings, policy, args.models,
                  args.judge_batch)
    app: Application = _bind(Ingress, args.ingress, "Ingress", settings, policy, hash_matcher,
                             embedder, judge, image_safety, args.models)
    return app


def start_local(settings: Settings, args: AppArgs | None = None, *, num_cpus: int = 2,
                host: str | None = None, port: int | None = None,
                log_to_driver: bool = False) -> str:
    """Start a private local Ray instance and Serve on host:port, run the app, return its URL.

    `address="local"` always starts a new instance: never attach to someone else's cluster on
    a shared machine. The dashboard is off (not needed, and it costs a core here).
    """
    import ray

    host = host or settings.serve.host
    port = port or settings.serve.port
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 namespace=APP_NAME, configure_logging=False, log_to_driver=log_to_driver)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(compose(settings, args), name=APP_NAME, route_prefix="/", blocking=False)
    except BaseException:
        # a failed start (e.g. Ray's HTTP proxy not up within its 60 s on a loaded machine)
        # must not leave a half-started Serve behind: the next start_local in this process
        # would attach to it and silently keep its old port
        if started:
            stop_local()
        raise
    return f"http://{host}:{port}"


def stop_local() -> None:
    """Shut Serve and the local Ray instance down (the ones `start_local` started)."""
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()
