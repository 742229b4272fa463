"""The host contract: the same items give the same verdicts in process and on Ray Serve.

Why: README promises that offline numbers (CLI, evaluation: `Pipeline.classify`) are the
service's numbers. Both hosts run the one cascade (`pipeline.cascade.run_cascade`) with their
own stage runner; this test holds them to it on a fixed list of items covering every path:
text, image, both, context, a hash-bank hit, a judge that raises, a judge that reports an
error, and a judge that times out. Verdicts must be equal apart from timings (and the
`elapsed_ms` of signals), including rationale, scores, errors and model versions.

Its own Ray app (module scope) with a short stage timeout, so the timeout case takes seconds.
Text positives are the reference judge's neutral markers (`cg-test:<code>`); images are
benign Kodak photos, one of them placed in a test bank.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import add_to_bank, kodak, make_settings

from childguard.pipeline import Pipeline, build_pipeline
from childguard.schema import ContentItem, Decision, Status, Verdict
from childguard.settings import Settings
from childguard.store.roles import Role
from childguard.store.store import Store
from ports import free_port

pytestmark = pytest.mark.integration

STAGE_TIMEOUT_S = 3.0


@dataclass
class Hosts:
    url: str
    key: str
    settings: Settings
    pipeline: Pipeline
    banked: Path


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    from childguard.serving.app import AppArgs, start_local, stop_local

    home = tmp_path_factory.mktemp("contract-home")
    base = make_settings(home)
    settings = base.model_copy(update={
        "serve": base.serve.model_copy(update={"stage_timeout_s": STAGE_TIMEOUT_S})})
    store = Store.from_settings(settings)
    _, key = store.create_key("contract", Role.SERVICE)
    banked = kodak(22)
    assert add_to_bank(settings, store, banked)
    url = start_local(settings, AppArgs(models="reference"), num_cpus=2, port=free_port())
    pipeline = build_pipeline(settings, models="reference")
    try:
        yield Hosts(url=url, key=key, settings=settings, pipeline=pipeline, banked=banked)
    finally:
        pipeline.close(wait_s=2 * STAGE_TIMEOUT_S + 1)
        stop_local()
        store.close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _items(banked: Path) -> list[dict[str, Any]]:
    """(id, request body) of every path through the cascade; the timeout case last, as a
    timed-out judge keeps its worker busy until it finishes."""
    return [
        {"id": "c-text", "text": "see you at the library after school"},
        {"id": "c-flag", "text": "please look at cg-test:grooming"},
        {"id": "c-context", "text": "ok then",
         "context": [{"author": "sender", "text": "remember cg-test:sextortion"},
                     {"author": "recipient", "text": "what do you mean"}]},
        {"id": "c-image", "image": _b64(kodak(3))},
        {"id": "c-both", "text": "nice view from the hill", "image": _b64(kodak(5))},
        {"id": "c-hash", "image": _b64(banked)},
        {"id": "c-raise", "text": "please answer cg-test:raise"},
        {"id": "c-error", "text": "please answer cg-test:error"},
        {"id": "c-timeout", "text": "please answer cg-test:slow"},
    ]


def _comparable(v: Verdict) -> dict[str, Any]:
    data = v.model_dump(mode="json", exclude={"timings_ms", "created_at"})
    for s in data["signals"]:
        s.pop("elapsed_ms", None)
    return data


def _in_process(h: Hosts, body: dict[str, Any]) -> Verdict:
    return h.pipeline.classify(ContentItem.model_validate(body))


def _on_ray(h: Hosts, body: dict[str, Any]) -> Verdict:
    resp = httpx.post(f"{h.url}/v1/classify", json=body,
                      headers={"Authorization": f"Bearer {h.key}"}, timeout=60.0)
    assert resp.status_code == 200, resp.text
    return Verdict.model_validate(resp.json())


def test_both_hosts_give_equal_verdicts_on_every_path(hosts: Hosts) -> None:
    local = {b["id"]: _in_process(hosts, b) for b in _items(hosts.banked)}
    ray = {b["id"]: _on_ray(hosts, b) for b in _items(hosts.banked)}
    for item_id in local:
        assert _comparable(ray[item_id]) == _comparable(local[item_id]), item_id

    # and the paths are the ones named (so an equal-but-wrong pair cannot pass)
    assert local["c-text"].decision is Decision.ALLOW and local["c-text"].judged
    assert local["c-flag"].decision is Decision.BLOCK
    assert local["c-context"].decision is Decision.BLOCK  # the marker is in the context
    assert local["c-hash"].decision is Decision.BLOCK and local["c-hash"].hash_matches
    assert "judge" not in local["c-hash"].timings_ms  # models skipped
    assert "judge" not in ray["c-hash"].timings_ms
    for item_id, code in (("c-raise", "stage_failed (RuntimeError)"),
                          ("c-error", ""), ("c-timeout", "timeout")):
        for v in (local[item_id], ray[item_id]):
            assert v.status is Status.ERROR and v.decision is Decision.REVIEW, item_id
            assert any(e.startswith(f"judge: {code}") for e in v.errors), (item_id, v.errors)
    # both hosts time stages under the same names
    for item_id in local:
        assert set(local[item_id].timings_ms) == set(ray[item_id].timings_ms), item_id
