"""HTTP routes of the review bridge, mounted by the serving app (`app.include_router(router)`).

- `POST /v1/review/webhook`: Label Studio's annotation created/updated webhooks. The shared
  secret header is checked (constant time) before the body is read: wrong or missing -> 401,
  nothing recorded. Unknown tasks and other actions -> 200 and ignored (logged by id), so Label
  Studio does not keep failing on them. Duplicates are recorded once (see `decisions`).
  Follow-ups (callback, hash bank) run after the response.
- `GET /v1/media/{media_id}?exp=..&sig=..`: review images for Label Studio's browser, which
  cannot send our API key; the HMAC-signed, expiring URL is the credential. Bad or expired
  signature -> 403; media purged or unknown -> 404. Never cached, never sniffed.

The routes find the store and settings on `request.app.state` (`store`, `settings`, set by the
serving app) and build the `ReviewBridge` once per app (`app.state.review_bridge`, which tests
may set themselves).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from childguard.review_bridge.signing import (
    WEBHOOK_SECRET_HEADER,
    ReviewSecrets,
    check_media,
    check_webhook_secret,
)

log = logging.getLogger("childguard.review")

router = APIRouter(tags=["review"])

HANDLED_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
_build_lock = threading.Lock()


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, "status": status}, status_code=status)


def _secrets(request: Request) -> ReviewSecrets:
    state = request.app.state
    cached = getattr(state, "review_secrets", None)
    if cached is None:
        bridge = getattr(state, "review_bridge", None)
        cached = bridge.secrets if bridge is not None else ReviewSecrets.from_settings(
            state.settings)
        state.review_secrets = cached
    return cached


def get_bridge(request: Request) -> Any:
    """The app's ReviewBridge, built on first use from `app.state.settings` and `.store`."""
    state = request.app.state
    bridge = getattr(state, "review_bridge", None)
    if bridge is None:
        with _build_lock:
            bridge = getattr(state, "review_bridge", None)
            if bridge is None:
                from childguard.review_bridge.bridge import ReviewBridge

                metrics_obj = getattr(state, "metrics", None)
                registry = getattr(metrics_obj, "registry", None)
                from childguard.review_bridge.worker import WorkerMetrics

                bridge = ReviewBridge.from_settings(
                    state.settings, state.store,
                    metrics=WorkerMetrics(registry) if registry is not None else None,
                )
                state.review_bridge = bridge
    return bridge


@router.post("/v1/review/webhook", summary="Label Studio annotation webhook (shared secret)")
async def review_webhook(request: Request, background: BackgroundTasks) -> Response:
    secrets = _secrets(request)
    if not check_webhook_secret(secrets.webhook_secret, request.headers.get(WEBHOOK_SECRET_HEADER)):
        log.warning("review: webhook with a missing or wrong secret from %s",
                    request.client.host if request.client else "?")
        return _error(401, "unauthorized",
                      f"missing or wrong {WEBHOOK_SECRET_HEADER} header; the webhook must be "
                      "registered by `childguard review init`")
    try:
        payload = json.loads(await request.body())
    except ValueError:
        return _error(400, "invalid_json", "the webhook body must be a JSON object")
    if not isinstance(payload, dict):
        return _error(400, "invalid_payload", "the webhook body must be a JSON object")
    action = str(payload.get("action", ""))
    if action not in HANDLED_ACTIONS:
        return JSONResponse({"status": "ignored", "reason": f"action {action or '(none)'}"})
    task = payload.get("task") or {}
    annotation = payload.get("annotation") or {}
    if not isinstance(task, dict) or not isinstance(annotation, dict):
        return _error(400, "invalid_payload", "'task' and 'annotation' must be objects")
    bridge = get_bridge(request)
    result = await run_in_threadpool(bridge.decisions.handle, task, annotation, source="webhook")
    if result.status == "recorded":
        background.add_task(run_in_threadpool, bridge.decisions.follow_up, result)
    return JSONResponse({"status": result.status, "item_id": result.item_id,
                         "reason": result.reason or None,
                         "revision": result.decision.revision if result.decision else None})


@router.get("/v1/media/{media_id}", summary="A review image (signed, expiring URL)")
async def review_media(request: Request, media_id: str, exp: int = Query(...),
                       sig: str = Query(..., min_length=16, max_length=128)) -> Response:
    problem = check_media(_secrets(request).media_key, media_id, exp, sig)
    if problem is not None:
        return _error(403, "forbidden", f"media URL {problem}; ask for a fresh task link")
    store = request.app.state.store
    found = await run_in_threadpool(store.get_media, media_id)
    if found is None:
        return _error(404, "not_found", "media not retained (purged after its retention period "
                      "or never stored)")
    data, mime = found
    if not str(mime).startswith("image/"):
        # the media area also keeps the review text; this endpoint serves images only
        return _error(404, "not_found", "no image with this id")
    return Response(content=data, media_type=mime, headers={
        "Cache-Control": "private, no-store, max-age=0",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline",
        "Referrer-Policy": "no-referrer",
        "Access-Control-Allow-Origin": "*",
    })  # fmt: skip
