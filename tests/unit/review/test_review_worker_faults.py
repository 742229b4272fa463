"""The outbox worker when Label Studio answers 5xx or times out: nothing lost, backoff set,
the rest of the batch released at once; plus the lifecycle's credentials file."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from review_unit_support import add_review_item, make_settings, policy

from childguard.review_bridge.client import LabelStudioClient
from childguard.review_bridge.lifecycle import Credentials, LabelStudioInstance
from childguard.review_bridge.worker import OutboxWorker
from childguard.store import Store


def _fault(kind: str) -> httpx.MockTransport:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if kind == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(503, text="maintenance")

    t = httpx.MockTransport(handler)
    t.calls = calls  # type: ignore[attr-defined]
    return t


@pytest.mark.parametrize("kind", ["5xx", "timeout"])
def test_label_studio_down_loses_nothing(tmp_path: Path, kind: str) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    pol = policy()
    for i in range(5):
        add_review_item(store, pol, f"item-{i}")
    transport = _fault(kind)
    client = LabelStudioClient("http://ls.invalid", "t" * 40, transport=transport)
    worker = OutboxWorker(store, client, pol, settings.review, project_id=1, media_key="k")
    report = worker.run_once(limit=10)
    assert report.claimed == 5 and report.failed == 5 and report.label_studio_down
    assert transport.calls["n"] == 1  # the first failure releases the rest without trying
    stats = store.outbox_stats()
    assert stats["depth"] == 5 and stats["retrying"] == 5
    reg = worker.metrics.registry
    assert reg.get_sample_value("childguard_review_queue_depth") == 5
    assert reg.get_sample_value("childguard_review_outbox_failures_total",
                                {"reason": "unavailable"}) == 5
    assert store.claim_outbox(10) == []  # backing off: not due yet
    soon = datetime.now(UTC) + timedelta(seconds=10)
    assert len(store.claim_outbox(10, now=soon)) == 5  # due again after the backoff


def test_credentials_created_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "labelstudio" / "credentials.json"
    creds = Credentials.load_or_create(path)
    assert Credentials.load_or_create(path) == creds
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(creds.token) == 40 and creds.password and creds.secret_key
    inst = LabelStudioInstance(data_dir=tmp_path / "labelstudio", credentials=creds, port=1)
    cmd = inst.command()
    for flag in ("--no-browser", "--enable-legacy-api-token", "--user-token", "--data-dir"):
        assert flag in cmd
    assert "--version" not in cmd
    assert inst.environment()["SSRF_PROTECTION_ENABLED"] == "false"
    assert inst.pid() is None and not inst.healthy(timeout=0.5)
