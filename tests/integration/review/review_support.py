"""Support for the review-bridge integration tests: a REAL Label Studio server, our real API
(serving app + review routes) over HTTP, a real store, and a callback receiver.

Label Studio: one server per test session on a free port with a temp data dir. Its first start
runs ~75 s of migrations, so the migrated, empty data dir (test admin user included) is cached
once as a template under ~/.cache/childguard and copied for each session (~8 s start). The
template is built in a temp dir and renamed into place only when complete, and it is only ever
copied from, never run in place.

Each test gets its own Label Studio project (unique title), store and API server, so tests do not
see each other's tasks.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from childguard.policy import load_policy
from childguard.review_bridge.bridge import ReviewBridge
from childguard.review_bridge.client import LabelStudioClient
from childguard.review_bridge.lifecycle import (
    DEFAULT_VENV,
    LABEL_STUDIO_VERSION,
    Credentials,
    LabelStudioInstance,
)
from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    Verdict,
)
from childguard.settings import Settings
from ports import free_port

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
KODAK = (REPO / ".." / "shared" / "datasets" / "images" / "kodak").resolve()

#: fixed credentials of the throwaway test server (never used outside tests)
TEST_CREDS = Credentials(
    username="review-test@childguard.local",
    password="review-test-password-1",
    token="7e57" + "0" * 36,
    secret_key="review-test-django-secret-key-not-for-production",
)
TEMPLATE = Path.home() / ".cache" / "childguard" / f"labelstudio-template-{LABEL_STUDIO_VERSION}"


def _build_template() -> None:
    if (TEMPLATE / ".complete").is_file():
        return
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="ls-template-", dir=TEMPLATE.parent))
    inst = LabelStudioInstance(data_dir=build / "data", credentials=TEST_CREDS,
                               port=free_port(), venv=DEFAULT_VENV)
    try:
        inst.start(wait_s=300)
    finally:
        inst.stop()
    for junk in ("labelstudio.pid", "labelstudio.log"):
        (build / "data" / junk).unlink(missing_ok=True)
    (build / "data" / ".complete").write_text(LABEL_STUDIO_VERSION)
    with contextlib.suppress(OSError):  # another session may have won the race
        os.rename(build / "data", TEMPLATE)
    shutil.rmtree(build, ignore_errors=True)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioInstance]:
    if not (DEFAULT_VENV / "bin" / "label-studio").is_file():
        pytest.skip(f"Label Studio is not installed in {DEFAULT_VENV}; run "
                    "`scripts/labelstudio.sh install` (make run / make test do)")
    _build_template()
    data_dir = tmp_path_factory.mktemp("labelstudio") / "data"
    shutil.copytree(TEMPLATE, data_dir)
    inst = LabelStudioInstance(data_dir=data_dir, credentials=TEST_CREDS, port=free_port(),
                               venv=DEFAULT_VENV)
    inst.start(wait_s=300)
    try:
        yield inst
    finally:
        inst.stop()


# -- our service ---------------------------------------------------------------------------


class ScriptedBackend:
    """A ClassifyBackend (the serving interface) whose verdicts the test scripts per item:
    `metadata.category` and `metadata.score` set the one category score, thresholds from the
    policy decide. The reference stand-in for the model pipeline."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    async def classify(self, items: Sequence[ContentItem]) -> list[Verdict]:
        out = []
        for item in items:
            code = str(item.metadata.get("category", "grooming"))
            score = float(item.metadata.get("score", 0.5))  # type: ignore[arg-type]
            decision = self.policy.spec.category(code).thresholds.decide(score)
            out.append(Verdict(
                item_id=item.id, decision=decision, judged=True,
                categories=(CategoryScore(code=code, score=score, decision=decision,
                                          rationale="scripted test score"),),
                rationale="scripted test verdict", policy_id=self.policy.id,
                policy_version=self.policy.version, model_versions={"judge": "scripted"},
            ))
        return out

    async def readiness(self) -> dict[str, str]:
        return {"pipeline": "ok"}


class ApiServer:
    """The serving app (with the review routes) under uvicorn in a thread; restartable."""

    def __init__(self, app: Any, port: int) -> None:
        self.app, self.port = app, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


@dataclass
class CallbackReceiver:
    """A product service's callback endpoint: records every POST."""

    port: int
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def start(self) -> None:
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return [json.loads(body) for _, body in self.received]


@dataclass
class ReviewEnv:
    settings: Settings
    store: Any
    bridge: ReviewBridge
    api: ApiServer
    api_key: str
    callbacks: CallbackReceiver
    ls: LabelStudioInstance

    @property
    def client(self) -> LabelStudioClient:
        return self.bridge.client

    def classify(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import httpx

        r = httpx.post(f"{self.api.url}/v1/classify/batch", json={"items": items},
                       headers={"Authorization": f"Bearer {self.api_key}"}, timeout=60)
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        return list(body["verdicts"] if isinstance(body, dict) else body)

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.client.iter_tasks(self.bridge.project_id))


@pytest.fixture
def review_env(label_studio: LabelStudioInstance, tmp_path: Path) -> Iterator[ReviewEnv]:
    from childguard.serving.api import create_api
    from childguard.store import Store
    from childguard.store.roles import Role

    api_port = free_port()
    settings = Settings.load(
        home=tmp_path / "home", policies_dir=POLICIES,
        review={
            "label_studio_url": label_studio.url,
            "label_studio_token": TEST_CREDS.token,
            "project_title": f"childguard test {uuid.uuid4().hex[:8]}",
            "public_url": f"http://127.0.0.1:{api_port}",
        },
    )
    policy = load_policy(POLICIES / settings.policy)
    store = Store.from_settings(settings)
    bridge = ReviewBridge.from_settings(settings, store, policy=policy)
    bridge.init_project()
    app = create_api(settings, store, ScriptedBackend(policy))
    app.state.review_bridge = bridge
    _, secret = store.create_key("review-tests", Role.SERVICE)
    api = ApiServer(app, api_port)
    api.start()
    callbacks = CallbackReceiver(free_port())
    callbacks.start()
    env = ReviewEnv(settings, store, bridge, api, secret, callbacks, label_studio)
    try:
        yield env
    finally:
        api.stop()
        callbacks.stop()
        bridge.close()


def wait_until(check: Any, timeout: float = 15.0) -> Any:
    """Poll `check()` until truthy (webhook deliveries may be asynchronous); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def review_item(i: int, *, callback: str | None = None, image: bytes | None = None,
                category: str = "grooming", score: float = 0.5) -> dict[str, Any]:
    """A classify request the scripted backend sends to review. The text is a neutral
    placeholder: what the test checks is the plumbing, not the content."""
    import base64

    body: dict[str, Any] = {
        "text": f"test item {i}: placeholder text for the review plumbing",
        "external_id": f"ext-{i}", "source": "review-tests",
        "metadata": {"category": category, "score": score},
    }  # fmt: skip
    if callback:
        body["callback_url"] = callback
    if image is not None:
        body["image"] = base64.b64encode(image).decode()
    return body


def decision_for(status: Decision) -> str:
    return status.value
