"""Screenshot of the Label Studio review screen, for the record and for humans to judge.

Starts a throwaway Label Studio (from the test template), our API with the review routes, sends
one item with a benign Kodak photo to review, logs into Label Studio, and has headless Chromium
(Debian package `chromium`, driven over the DevTools protocol) capture the labelling screen of
that task. The picture must show the image blurred and greyscale, the model's suggestion and the
policy text beside the item.

    .venv/bin/python tests/integration/review/screenshot_review.py [--out docs/review_screen.png]

Prints one JSON line: the PNG path and the ids used.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: ports

from review_support import (
    KODAK,
    POLICIES,
    TEMPLATE,
    TEST_CREDS,
    ApiServer,
    ScriptedBackend,
    _build_template,
    free_port,
    review_item,
)

from childguard.policy import load_policy
from childguard.review_bridge.bridge import ReviewBridge
from childguard.review_bridge.lifecycle import DEFAULT_VENV, LabelStudioInstance
from childguard.settings import Settings

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--window-size=1680,1300",
]  # fmt: skip


def login_cookies(ls_url: str) -> dict[str, str]:
    """Log in through Label Studio's own form (CSRF included); returns the session cookies."""
    with httpx.Client(base_url=ls_url, follow_redirects=False, timeout=30) as http:
        page = http.get("/user/login/")
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if m is None:
            raise RuntimeError("no CSRF token on Label Studio's login page")
        r = http.post("/user/login/", data={
            "csrfmiddlewaretoken": m.group(1), "email": TEST_CREDS.username,
            "password": TEST_CREDS.password,
        }, headers={"Referer": f"{ls_url}/user/login/"})  # fmt: skip
        if r.status_code not in (302, 303) or "sessionid" not in http.cookies:
            raise RuntimeError(f"login failed: status {r.status_code}")
        return {k: v for k, v in http.cookies.items()}


class Cdp:
    """A minimal DevTools protocol client over one websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))


def screenshot(url: str, cookies: dict[str, str], ls_url: str, out: Path, *,
               wait_s: float = 12.0) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium not found; apt-get install -y chromium")
    port = free_port()
    profile = Path(tempfile.mkdtemp(prefix="cg-chromium-"))
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                if any(t.get("type") == "page" for t in targets):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        page = next(t for t in targets if t.get("type") == "page")
        from websockets.sync.client import connect

        with connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:
            cdp = Cdp(ws)
            cdp.call("Network.enable")
            for name, value in cookies.items():
                cdp.call("Network.setCookie", name=name, value=value, url=ls_url)
            cdp.call("Page.enable")
            cdp.call("Page.navigate", url=url)
            time.sleep(wait_s)  # the labelling UI is a React app that loads in steps
            shot = cdp.call("Page.captureScreenshot", format="png")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/review_screen.png"))
    parser.add_argument("--image", type=Path, default=KODAK / "kodim23.png")
    args = parser.parse_args()

    from childguard.serving.api import create_api
    from childguard.store import Store
    from childguard.store.roles import Role

    _build_template()
    work = Path(tempfile.mkdtemp(prefix="cg-screenshot-"))
    shutil.copytree(TEMPLATE, work / "labelstudio")
    ls = LabelStudioInstance(data_dir=work / "labelstudio", credentials=TEST_CREDS,
                             port=free_port(), venv=DEFAULT_VENV)
    ls.start(wait_s=300)
    api_port = free_port()
    api: ApiServer | None = None
    try:
        settings = Settings.load(home=work / "home", policies_dir=POLICIES, review={
            "label_studio_url": ls.url, "label_studio_token": TEST_CREDS.token,
            "project_title": f"childguard review {uuid.uuid4().hex[:6]}",
            "public_url": f"http://127.0.0.1:{api_port}",
        })  # fmt: skip
        policy = load_policy(POLICIES / settings.policy)
        store = Store.from_settings(settings)
        bridge = ReviewBridge.from_settings(settings, store, policy=policy)
        bridge.init_project()
        app = create_api(settings, store, ScriptedBackend(policy))
        app.state.review_bridge = bridge
        _, key = store.create_key("screenshot", Role.SERVICE)
        api = ApiServer(app, api_port)
        api.start()
        body = review_item(1, image=args.image.read_bytes(), category="sexual_minors",
                           score=0.62)
        body["text"] = "A family photo shared in a parenting group, with a question about it."
        r = httpx.post(f"{api.url}/v1/classify", json=body,
                       headers={"Authorization": f"Bearer {key}"}, timeout=60)
        r.raise_for_status()
        item_id = r.json()["item_id"]
        bridge.worker().drain()
        task = next(iter(bridge.client.find_tasks_by_data(bridge.project_id, "item_id",
                                                          item_id)))
        url = f"{ls.url}/projects/{bridge.project_id}/data?task={task['id']}"
        screenshot(url, login_cookies(ls.url), ls.url, args.out)
        print(json.dumps({"png": str(args.out.resolve()), "item_id": item_id,
                          "task_id": task["id"], "project_id": bridge.project_id}))
    finally:
        if api is not None:
            api.stop()
        ls.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
