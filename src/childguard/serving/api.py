"""The HTTP API (FastAPI), free of Ray.

Why free of Ray: the same FastAPI app is the ingress of the Ray Serve application (see
`app.py`, which hands it a backend that calls the model deployments) and runs in-process for
tests and the fuzz test (with a backend that calls a local `Pipeline`). Everything about HTTP
lives here: request models, limits, auth, the error format, metrics, storing verdicts.

Error contract: every client mistake is a 4xx whose JSON body says what was received and what is
allowed (`{"error": ..., "message": ..., "status": ...}`); `childguard.errors` classes map to
status codes in one exception handler (`_childguard_error`). A 5xx means our bug or a dependency
down (503), never bad input. Raw content is never logged or echoed back: messages quote sizes,
types and field names only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from childguard import __version__
from childguard.content import ALLOWED_FORMATS, check_text
from childguard.errors import (
    ChildguardError,
    ContentTooLarge,
    DependencyError,
    InvalidContent,
    NotFound,
    UnsupportedMedia,
    UserError,
)
from childguard.schema import ContentItem, Decision, JsonScalar, Verdict
from childguard.schema import Message as ContextMessage
from childguard.serving.metrics import ApiMetrics
from childguard.settings import LimitsSettings, Settings

log = logging.getLogger("childguard.serving")

API_PREFIX = "/v1"


# -- the backend the API classifies with --------------------------------------------------


class ClassifyBackend(Protocol):
    """What the API needs from whatever runs the pipeline (in-process or Ray deployments)."""

    async def classify(self, items: Sequence[ContentItem]) -> list[Verdict]:
        """One verdict per item, in order. Raises UserError for bad input only."""
        ...

    async def readiness(self) -> dict[str, str]:
        """Component name -> 'ok', 'ok (<state>)' for an optional part that is absent, or the
        reason it is not ready."""
        ...


class PipelineBackend:
    """In-process backend: a local `Pipeline` run on a worker thread (tests, single process)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    async def classify(self, items: Sequence[ContentItem]) -> list[Verdict]:
        if len(items) == 1:
            verdict = await run_in_threadpool(self.pipeline.classify, items[0])
            return [verdict]
        verdicts: list[Verdict] = await run_in_threadpool(self.pipeline.classify_batch, list(items))
        return verdicts

    async def readiness(self) -> dict[str, str]:
        return {"pipeline": "ok"}


# -- request models -------------------------------------------------------------------------


class ClassifyRequest(BaseModel):
    """One item to classify: text, an image (base64), or both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "what time is practice on saturday?", "source": "chat"},
            ]
        },
    )

    id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
        description="item id to use (default: a new random id); classifying an id again "
        "records a new verdict for it",
    )
    text: str | None = Field(default=None, description="the message text (UTF-8)")
    image: str | None = Field(
        default=None,
        description="image bytes, base64 (standard alphabet, padded); JPEG, PNG, WebP, GIF, "
        "BMP or TIFF",
    )
    video: str | None = Field(
        default=None,
        description="video bytes, base64 (standard alphabet, padded); mp4, mov or webm. Large "
        "videos: upload with multipart/form-data",
    )
    context: list[ContextMessage] = Field(
        default_factory=list, description="earlier messages of the conversation, oldest first"
    )
    source: str | None = Field(default=None, max_length=128, description="calling product/surface")
    external_id: str | None = Field(
        default=None, max_length=256, description="the caller's own id for this item"
    )
    callback_url: str | None = Field(
        default=None, max_length=2048,
        description="http(s) URL told about the final decision after human review",
    )
    metadata: dict[str, JsonScalar] = Field(default_factory=dict)

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"callback_url must be an http:// or https:// URL; received a value starting "
                f"{v[:8]!r}"
            )
        return v


class BatchClassifyRequest(BaseModel):
    """Several items in one call; verdicts come back in the same order."""

    model_config = ConfigDict(extra="forbid")

    items: list[ClassifyRequest] = Field(min_length=1)


class BatchClassifyResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: list[Verdict]


class ErrorBody(BaseModel):
    """Every 4xx/5xx response body."""

    error: str = Field(description="error class, e.g. ContentTooLarge")
    message: str = Field(description="what was received and what is allowed")
    status: int


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    ready: bool
    components: dict[str, str]


#: the multipart/form-data fields of POST /v1/classify (JSON-valued ones are JSON strings)
MULTIPART_FIELDS: dict[str, str] = {
    "id": "item id to use (default: a new random id)",
    "text": "the message text",
    "image": "the image file",
    "video": "the video file (mp4, mov, webm)",
    "context": "JSON array of {author, text, sent_at}",
    "source": "calling product/surface",
    "external_id": "the caller's own id",
    "callback_url": "http(s) URL told about the final decision",
    "metadata": "JSON object of scalars",
}


def _multipart_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        name: {"type": "string", "description": desc} for name, desc in MULTIPART_FIELDS.items()
    }
    props["image"] = {"type": "string", "format": "binary", "description": "the image file"}
    props["video"] = {"type": "string", "format": "binary",
                      "description": "the video file (mp4, mov, webm)"}
    return {"type": "object", "properties": props, "additionalProperties": False}


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in {
        400: "malformed request", 401: "missing or unknown API key",
        403: "the key's role may not call this endpoint", 404: "not found",
        413: "body, text, image or batch over the limit", 415: "unsupported media type",
        422: "invalid or missing content", 503: "a dependency is unavailable",
    }.items()
}


# -- converting requests into ContentItems (all input checks) --------------------------------


def _b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise InvalidContent(
            f"{field} is not valid base64: received {len(value)} characters ({exc}); send the "
            "image bytes base64-encoded (RFC 4648 standard alphabet, padded), or upload the "
            "file with multipart/form-data"
        ) from exc


def sniff_image(data: bytes, limits: LimitsSettings, field: str = "image") -> str:
    """Cheap header-only checks (size, format, pixel count) before any pixel is decoded.

    The pipeline decodes the image fully (and reports truncation); this gives early, precise
    4xx answers without paying for a second decode in the API.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidContent(
            f"{field} is empty (0 bytes); send a JPEG, PNG, WebP, GIF, BMP or TIFF"
        )
    if len(data) > limits.max_image_bytes:
        raise ContentTooLarge(
            f"{field} is {len(data)} bytes; at most {limits.max_image_bytes} bytes are allowed"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ContentTooLarge(f"{field} dimensions are too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnsupportedMedia(
            f"cannot identify {field} ({len(data)} bytes, starts {data[:8].hex()}); allowed "
            f"formats: {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from exc
    fmt = (img.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedMedia(
            f"{field} format {fmt or 'unknown'} is not supported; allowed: "
            f"{', '.join(sorted(ALLOWED_FORMATS))}"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidContent(f"{field} has invalid dimensions {width}x{height}")
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise ContentTooLarge(
            f"{field} is {width}x{height} = {width * height} pixels; at most "
            f"{limits.max_image_pixels} pixels and {limits.max_image_side} per side are allowed"
        )
    return fmt


def sniff_video(data: bytes, limits: LimitsSettings) -> None:
    """Container-level checks (size, container, a video stream, frame size, duration) before
    any frame is decoded; the pipeline's decode enforces the frame limits while it reads."""
    from childguard.hashing.video import probe_video, video_limits

    probe_video(data, video_limits(limits))


def to_item(
    req: ClassifyRequest, limits: LimitsSettings, image: bytes | None = None,
    video: bytes | None = None,
) -> ContentItem:
    """Check a request against the limits and build the ContentItem."""
    if image is None and req.image is not None:
        image = _b64decode(req.image, "image")
    if video is None and req.video is not None:
        video = _b64decode(req.video, "video")
    if image is not None and video is not None:
        raise InvalidContent("give an image or a video, not both (send two items)")
    text = req.text
    if text is not None and not text.strip() and (image is not None or video is not None):
        text = None  # media with an empty caption is a media item
    if text is None and image is None and video is None:
        raise InvalidContent(
            "missing content: give 'text', 'image', 'video', or text with one of them; "
            "received none"
        )
    if text is not None:
        text = check_text(text, limits, "text")
    if image is not None:
        sniff_image(image, limits)
    if video is not None:
        sniff_video(video, limits)
    if len(req.context) > limits.max_context_messages:
        raise ContentTooLarge(
            f"context has {len(req.context)} messages; at most {limits.max_context_messages} "
            "are allowed"
        )
    for i, msg in enumerate(req.context):
        check_text(msg.text, limits, f"context[{i}].text")
    ids = {"id": req.id} if req.id is not None else {}
    return ContentItem(
        **ids,
        text=text,
        image=image,
        video=video,
        context=tuple(req.context),
        source=req.source,
        external_id=req.external_id,
        callback_url=req.callback_url,
        metadata=req.metadata,
    )


def _validation_message(errors: Sequence[Any], prefix: str = "") -> str:
    parts = []
    for err in errors[:10]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = prefix + ".".join(loc) if loc else (prefix.rstrip(".") or "body")
        kind = err.get("type", "")
        received = err.get("input")
        if kind == "extra_forbidden":
            parts.append(f"unknown field '{where}' (not part of the request schema)")
        elif kind == "missing":
            parts.append(f"{where}: required field is missing")
        elif kind in ("json_invalid", "json_type"):
            parts.append(f"body is not valid JSON ({err.get('msg', '')})")
        else:
            got = f" (received {type(received).__name__})" if received is not None else ""
            parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
    if len(errors) > 10:
        parts.append(f"... and {len(errors) - 10} more errors")
    return "; ".join(parts) or "invalid request"


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(
        {"error": error, "message": message, "status": status}, status_code=status,
        headers=headers,
    )


# -- body limit (pure ASGI, so it also covers bodies FastAPI reads itself) ---------------------


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, received: int, limit: int, exact: bool) -> None:
        amount = f"{received} bytes" if exact else f"more than {limit} bytes"
        super().__init__(
            413, f"request body is {amount}; at most {limit} bytes are allowed"
        )


class BodyLimitMiddleware:
    """Reject bodies over the limit: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length > self.max_bytes:
                    exc = BodyTooLarge(length, self.max_bytes, exact=True)
                    resp = _error(413, "ContentTooLarge", str(exc.detail))
                    await resp(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(seen, self.max_bytes, exact=False)
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Count requests by route template and status, time them, track requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        m = self.metrics

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        m.inflight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.inflight.dec()
            # the matched route's template (bounded label values), not the raw path
            route = getattr(scope.get("route"), "path", "unmatched")
            m.requests.labels(route=route, method=scope.get("method", ""),
                              status=str(status)).inc()
            m.latency.labels(route=route).observe(time.perf_counter() - start)


# -- the app --------------------------------------------------------------------------------


def _no_auth(*_roles: Any) -> Callable[..., Awaitable[Any]]:
    async def dep() -> None:
        return None

    return dep


def _load_auth() -> tuple[Callable[..., Any], Any]:
    from childguard.serving.auth import require_role
    from childguard.store.roles import Role

    return require_role, Role


def _actor(principal: Any) -> str:
    for attr in ("key_id", "id", "name"):
        value = getattr(principal, attr, None)
        if value:
            return f"key:{value}"
    return "api"


def create_api(settings: Settings, store: Any, backend: ClassifyBackend,
               workbench: Any = None) -> FastAPI:
    """Build the FastAPI app. `store` is a `childguard.store.Store` (auth, verdicts, outbox)."""
    limits = settings.limits
    require_role, Role = _load_auth()
    classify_roles = Depends(require_role(Role.SERVICE, Role.ADMIN))
    verdict_roles = Depends(require_role(Role.SERVICE, Role.REVIEWER, Role.ADMIN))
    admin_roles = Depends(require_role(Role.ADMIN))
    metrics = ApiMetrics()

    app = FastAPI(
        title="childguard",
        version=__version__,
        description=(
            "Classify text, images and text+image posts against child-safety policies. "
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`."
        ),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.backend = backend
    app.state.metrics = metrics

    # -- errors: one place maps error classes to status codes ------------------------------
    @app.exception_handler(ChildguardError)
    async def _childguard_error(_: Request, exc: ChildguardError) -> Response:
        status = exc.http_status if isinstance(exc, UserError | DependencyError) else 500
        if status >= 500:
            log.warning("request failed: %s: %s", type(exc).__name__, exc)
        return _error(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> Response:
        return _error(422, "InvalidRequest", _validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 413: "ContentTooLarge", 415: "UnsupportedMedia"}
        return _error(
            exc.status_code, names.get(exc.status_code, "HTTPError"), str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    # -- classification ---------------------------------------------------------------------
    async def _classify_and_store(
        items: list[ContentItem], actor: str, response: Response | None = None
    ) -> list[Verdict]:
        t0 = time.perf_counter()
        verdicts = await backend.classify(items)
        t1 = time.perf_counter()
        if len(verdicts) != len(items):
            raise DependencyError(
                f"the pipeline returned {len(verdicts)} verdicts for {len(items)} items"
            )
        out = []
        for item, verdict in zip(items, verdicts, strict=True):
            if verdict.external_id is None and verdict.source is None and (
                item.external_id or item.source
            ):
                verdict = verdict.model_copy(
                    update={"external_id": item.external_id, "source": item.source}
                )
            out.append(verdict)
        try:
            await run_in_threadpool(_save_all, store, items, out, actor, settings.limits,
                                    settings.hashing.video_seconds_per_hash)
        except ChildguardError:
            raise
        except Exception as exc:
            raise DependencyError(
                f"the verdict store is unavailable ({type(exc).__name__}); retry later"
            ) from exc
        t2 = time.perf_counter()
        if response is not None:  # where the time went (W3C Server-Timing; no content)
            response.headers["Server-Timing"] = (
                f"classify;dur={(t1 - t0) * 1000:.2f}, store;dur={(t2 - t1) * 1000:.2f}"
            )
        for verdict in out:
            metrics.observe_verdict(verdict)
        return out

    classify_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyRequest"}},
                "multipart/form-data": {"schema": _multipart_schema()},
            },
        }
    }

    @app.post(
        f"{API_PREFIX}/classify",
        response_model=Verdict,
        responses=_ERROR_RESPONSES,
        openapi_extra=classify_body,
        summary="Classify one item (JSON with base64 image, or multipart upload)",
        tags=["classify"],
    )
    async def classify(
        request: Request, response: Response, principal: Any = classify_roles
    ) -> Verdict:
        item = await _read_classify_request(request, limits)
        (verdict,) = await _classify_and_store([item], _actor(principal), response)
        return verdict

    @app.post(
        f"{API_PREFIX}/classify/batch",
        response_model=BatchClassifyResponse,
        responses=_ERROR_RESPONSES,
        summary="Classify several items; verdicts in the same order",
        tags=["classify"],
    )
    async def classify_batch(
        body: BatchClassifyRequest, response: Response, principal: Any = classify_roles
    ) -> BatchClassifyResponse:
        if len(body.items) > limits.max_batch_items:
            raise ContentTooLarge(
                f"batch has {len(body.items)} items; at most {limits.max_batch_items} are allowed"
            )
        items = []
        for i, req in enumerate(body.items):
            try:
                items.append(to_item(req, limits))
            except UserError as exc:
                raise type(exc)(f"items[{i}]: {exc}") from exc
        verdicts = await _classify_and_store(items, _actor(principal), response)
        return BatchClassifyResponse(verdicts=verdicts)

    @app.get(
        f"{API_PREFIX}/verdicts/{{item_id}}",
        response_model=Verdict,
        responses=_ERROR_RESPONSES,
        summary="The final verdict of an item (a reviewer decision overrides the model's)",
        tags=["verdicts"],
    )
    async def get_verdict(
        item_id: str = Path(min_length=1, max_length=128), _: Any = verdict_roles
    ) -> Verdict:
        try:
            verdict = await run_in_threadpool(store.get_verdict, item_id)
        except ChildguardError:
            raise
        except Exception as exc:
            raise DependencyError(
                f"the verdict store is unavailable ({type(exc).__name__}); retry later"
            ) from exc
        if verdict is None:
            raise NotFound(f"no verdict for item id '{item_id[:128]}'")
        return verdict  # type: ignore[no-any-return]

    # -- operations ---------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness (no auth)")
    async def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.get(
        "/readyz", response_model=Readiness, tags=["ops"],
        responses={503: {"model": Readiness, "description": "not ready"}},
        summary="Readiness: models loaded and store reachable (no auth)",
    )
    async def readyz() -> Response:
        components: dict[str, str] = {}
        try:
            components.update(await backend.readiness())
        except Exception as exc:
            components["pipeline"] = f"not ready: {type(exc).__name__}: {exc}"
        components["store"] = await run_in_threadpool(_store_ready, store)
        ready = all(v == "ok" or v.startswith("ok ") for v in components.values())
        body = Readiness(ready=ready, components=components)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics", tags=["ops"], response_class=Response, responses=_ERROR_RESPONSES,
        summary="Prometheus metrics (admin key)",
    )
    async def metrics_endpoint(_: Any = admin_roles) -> Response:
        stats = await run_in_threadpool(_outbox_stats, store)
        if stats is not None:
            metrics.outbox_depth.set(float(stats.get("depth", 0) or 0))
            metrics.outbox_oldest.set(float(stats.get("oldest_age_s", 0) or 0))
        return Response(metrics.render(), media_type=metrics.content_type)

    # -- the review bridge's routes (webhook, media), when that module is installed --------
    try:
        from childguard.review_bridge.api import router as review_router
    except ImportError as exc:
        log.info("review bridge routes not mounted: %s", exc)
    else:
        app.include_router(review_router)

    # -- the policy workbench's pages (issue 25), when the host gives one -------------------
    if workbench is not None:
        from childguard.workbench.pages import router as workbench_router

        app.state.workbench = workbench
        app.include_router(workbench_router)

    # pure ASGI middlewares (no BaseHTTPMiddleware: its task group would turn an exception
    # raised while reading the body into an ExceptionGroup that bypasses the handlers above)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every answer
    return app


def _save_all(
    store: Any, items: Sequence[ContentItem], verdicts: Sequence[Verdict], actor: str,
    limits: LimitsSettings, video_seconds_per_hash: float,
) -> None:
    for item, verdict in zip(items, verdicts, strict=True):
        # the hash stage's hashes go with the item: the store does not hash the image again
        store.save_verdict(item, verdict, actor=actor, hashes=verdict.image_hashes() or None,
                           review_media=_video_review_media(item, verdict, limits,
                                                            video_seconds_per_hash))


def _video_review_media(item: ContentItem, verdict: Verdict, limits: LimitsSettings,
                        seconds_per_hash: float) -> list[tuple[bytes, str]]:
    """For a video sent to review: its keyframe sheet (what the reviewer sees, blurred and
    greyscale like any image) and the video (read back only for the review-confirmed bank).
    Decoded again here, for review items only: the pipeline's keyframes do not travel back."""
    if item.video is None or verdict.decision is not Decision.REVIEW:
        return []
    from childguard.hashing.video import hash_video, keyframe_sheet, video_limits
    from childguard.store.media import sniff_video_mime

    out: list[tuple[bytes, str]] = []
    try:
        v = hash_video(item.video, seconds_per_hash=seconds_per_hash,
                       limits=video_limits(limits), keyframes=limits.max_video_keyframes)
        if v.keyframes:
            out.append((keyframe_sheet(v.keyframes), "image/jpeg"))
    except ChildguardError as exc:  # the reviewer still gets the item, its text and signals
        log.warning("review: no keyframe sheet for item %s: %s", item.id, type(exc).__name__)
    out.append((item.video, sniff_video_mime(item.video)))
    return out


def _store_ready(store: Any) -> str:
    try:
        from sqlalchemy import text

        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"not ready: {type(exc).__name__}"


def _outbox_stats(store: Any) -> dict[str, Any] | None:
    try:
        stats = store.outbox_stats()
    except Exception as exc:
        log.info("outbox stats unavailable: %s", type(exc).__name__)
        return None
    return dict(stats) if stats is not None else None


async def _read_classify_request(request: Request, limits: LimitsSettings) -> ContentItem:
    """Parse POST /v1/classify by its Content-Type: JSON (base64 image) or multipart."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media in ("application/json", "") or media.endswith("+json"):
        body = await request.body()
        if not body:
            raise InvalidContent(
                "missing content: the request body is empty; send a JSON object with 'text', "
                "'image' (base64) or both"
            )
        try:
            req = ClassifyRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        return to_item(req, limits)
    if media == "multipart/form-data":
        return await _read_multipart(request, limits)
    raise UnsupportedMedia(
        f"Content-Type '{media[:100]}' is not supported; send application/json (image as "
        "base64) or multipart/form-data (image as a file)"
    )


async def _read_multipart(request: Request, limits: LimitsSettings) -> ContentItem:
    form = await request.form(max_files=1, max_fields=len(MULTIPART_FIELDS) + 1)
    fields: dict[str, Any] = {}
    media: dict[str, bytes] = {}  # 'image' / 'video'
    caps = {"image": limits.max_image_bytes, "video": limits.max_video_bytes}
    try:
        for key, value in form.multi_items():
            if key not in MULTIPART_FIELDS:
                raise InvalidContent(
                    f"unknown form field '{key[:64]}'; allowed: {', '.join(MULTIPART_FIELDS)}"
                )
            if key in fields or key in media:
                raise InvalidContent(f"form field '{key}' given more than once")
            if isinstance(value, UploadFile):
                if key not in caps:
                    raise InvalidContent(f"form field '{key}' must be text, received a file")
                data = await value.read(caps[key] + 1)
                if len(data) > caps[key]:
                    raise ContentTooLarge(
                        f"{key} is more than {caps[key]} bytes; at most {caps[key]} bytes are "
                        "allowed"
                    )
                media[key] = data
            elif key in caps:
                media[key] = _b64decode(value, key)  # a base64 text field is accepted too
            elif key in ("context", "metadata"):
                try:
                    fields[key] = json.loads(value)
                except ValueError as exc:
                    raise InvalidContent(
                        f"form field '{key}' must be JSON ({MULTIPART_FIELDS[key]}); received "
                        f"{len(value)} characters that do not parse: {exc.args[0][:80]}"
                    ) from exc
            else:
                fields[key] = value
    finally:
        await form.close()
    try:
        req = ClassifyRequest.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    return to_item(req, limits, image=media.get("image"), video=media.get("video"))
