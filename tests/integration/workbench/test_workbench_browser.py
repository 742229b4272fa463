"""The policy workbench in a real browser (Debian's Chromium, headless, driven by Playwright)
against the real API app served by uvicorn on a real SQLite store; the models are the
deterministic reference implementations (the page's wiring is under test, not the models).

The whole flow of issue 25: sign in as a policy author, make a draft, edit a threshold and a
rule, see the validation error in place, fix it, try an item under both versions, run a small
evaluation, be refused promoting one's own draft (four-eyes), sign in as a second author and
promote, see the service's verdicts carry the new version without a restart, roll back and
see the old version again. Each screen is captured (into $CHILDGUARD_SCREENSHOTS when set, as
docs/workbench/ was made; else a temporary folder)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from childguard.pipeline import build_pipeline
from childguard.policy_versions import load_active_policy
from childguard.serving.api import PipelineBackend, create_api
from childguard.serving.app import build_workbench
from childguard.settings import Settings
from childguard.store.roles import Role
from childguard.store.store import Store
from ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import uvicorn

    home = tmp_path_factory.mktemp("workbench")
    settings = Settings.load(home=home, policies_dir=REPO / "policies",
                             judge={"backend": "reference"},
                             workbench={"reload_interval_s": 0.05})
    store = Store.from_settings(settings)
    keys = {name: store.create_key(name, role)[1] for name, role in
            (("alice", Role.POLICY_AUTHOR), ("bob", Role.POLICY_AUTHOR),
             ("svc", Role.SERVICE))}
    # follows the active version; decides as a service with trained probes does, on
    # calibration.yaml's thresholds (the reference models train none)
    pipeline = build_pipeline(settings, models="reference", calibrated=True)
    app = create_api(settings, store, PipelineBackend(pipeline),
                     workbench=build_workbench(settings, store, "reference"))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "keys": keys, "settings": settings}
    srv.should_exit = True
    thread.join(10)
    pipeline.close()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _classify_version(server: dict[str, Any]) -> str:
    r = httpx.post(server["url"] + "/v1/classify", timeout=30,
                   headers={"Authorization": f"Bearer {server['keys']['svc']}"},
                   json={"text": "what time is practice on saturday?"})
    assert r.status_code == 200, r.text
    return str(r.json()["policy_version"])


def _served_version_becomes(server: dict[str, Any], version: str, within_s: float = 10) -> bool:
    """Whether the running service's verdicts carry `version` within `within_s` (it follows
    the active pointer every `workbench.reload_interval_s`)."""
    deadline = time.monotonic() + within_s
    while _classify_version(server) != version and time.monotonic() < deadline:
        time.sleep(0.1)
    return _classify_version(server) == version


def test_draft_try_evaluate_promote_rollback(server: dict[str, Any], browser: Any,
                                             tmp_path: Path) -> None:
    shots = Path(os.environ.get("CHILDGUARD_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    url = server["url"]
    shipped = load_active_policy(server["settings"]).version
    assert _classify_version(server) == shipped

    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def sign_in(who: str) -> None:
        page.goto(url + "/workbench")
        page.fill("input[name=key]", server["keys"][who])
        page.click("#signin")
        page.wait_for_selector("#active-version")

    # a service key may not use the workbench
    page.goto(url + "/workbench")
    page.screenshot(path=str(shots / "1-sign-in.png"))
    page.fill("input[name=key]", server["keys"]["svc"])
    page.click("#signin")
    assert "may not use the workbench" in page.content()

    sign_in("alice")
    assert page.text_content("#active-version") == shipped
    page.fill("input[name=note]", "raise the grooming review bar")
    page.click("#new-draft")
    page.wait_for_selector("#validation.ok")
    draft_url = page.url
    page.screenshot(path=str(shots / "2-draft.png"), full_page=False)

    # a threshold
    page.fill("input[name=review_grooming]", "0.3")
    page.click("#save-thresholds")
    page.wait_for_selector("#validation.ok")
    assert "saved thresholds" in page.text_content("#message")

    # a rule, broken: its own golden example no longer holds; the error shows in place
    page.click("summary:has-text('rules.yaml')")
    rules = page.input_value("#file-rules\\.yaml")
    broken = rules.replace("      - the recipe calls for a secret ingredient\n",
                           "      - the recipe calls for a secret ingredient\n"
                           '      - "remember, {secrecy}"\n', 1)
    assert broken != rules
    page.fill("#file-rules\\.yaml", broken)
    page.click("#save-rules\\.yaml")
    page.wait_for_selector("#validation.err")
    assert "grooming_secrecy" in page.text_content("#validation")
    page.screenshot(path=str(shots / "3-validation-error.png"))
    page.click("#promote")
    assert "does not validate" in page.text_content("#message")
    # fixed: the rule's examples hold again (a stricter co-occurrence window)
    page.click("summary:has-text('rules.yaml')")
    page.fill("#file-rules\\.yaml", rules.replace("    within: 25\n", "    within: 20\n", 1))
    page.click("#save-rules\\.yaml")
    page.wait_for_selector("#validation.ok")
    draft_version = page.text_content("#validation code")
    assert draft_version and draft_version != shipped

    # try an item under both versions
    page.fill("#try-text", "hello, are you coming to cg-test:grooming later?")
    page.click("#try")
    page.wait_for_selector("#trial")
    versions = page.eval_on_selector_all(".trial", "els => els.map(e => e.dataset.version)")
    assert versions == [shipped, draft_version]
    assert page.locator(".trial .verdict").count() == 2
    assert "block" in page.locator(".trial .verdict").nth(1).text_content()
    page.screenshot(path=str(shots / "4-try.png"), full_page=True)

    # a small evaluation
    page.fill("input[name=limit]", "8")
    page.click("#evaluate")
    page.wait_for_selector("#evaluation", timeout=180_000)
    text = page.text_content("#evaluation")
    assert "violating flagged" in text and "benign flagged" in text
    page.screenshot(path=str(shots / "5-evaluation.png"), full_page=True)

    # four-eyes: the author may not promote her own draft
    page.click("#promote")
    assert "four-eyes" in page.text_content("#message")

    # a second author promotes; the running service follows without a restart
    page.click("text=Sign out")
    sign_in("bob")
    page.goto(draft_url)
    page.fill("form[action$=promote] input[name=note]", "reviewed with alice")
    page.click("#promote")
    page.wait_for_selector("#active-version")
    assert page.text_content("#active-version") == draft_version
    page.screenshot(path=str(shots / "6-promoted.png"))
    assert _served_version_becomes(server, draft_version)

    # roll back to the shipped version
    page.click(f"tr:has(code:text-is('{shipped}')) >> text=Roll back to this")
    page.wait_for_selector("#active-version")
    assert page.text_content("#active-version") == shipped
    page.screenshot(path=str(shots / "7-rolled-back.png"))
    assert _served_version_becomes(server, shipped)
    page.close()
    if not os.environ.get("CHILDGUARD_SCREENSHOTS"):
        shutil.rmtree(shots, ignore_errors=True)
