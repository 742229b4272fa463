"""Opening an evaluation item from the workbench: our own sets' rows and benign public rows
are shown on request and every opening is audited; a violating row of a public set never is
(referenced by id only). Sign-in: only policy_author / admin keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from childguard.evaluation.datasets import load_dataset
from childguard.settings import Settings
from childguard.store.roles import Role
from childguard.store.store import Store
from childguard.workbench.drafts import Drafts
from childguard.workbench.pages import COOKIE, Workbench, router

REPO = Path(__file__).resolve().parents[3]
V2 = "evaluation_sets/child_safety_v2.jsonl[calib]"


@pytest.fixture
def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings.load(home=tmp_path / "home", policies_dir=REPO / "policies")
    store = Store.from_settings(settings)
    app = FastAPI()
    app.state.store, app.state.settings = store, settings
    app.state.workbench = Workbench(settings, Drafts(settings, store), lambda: None,
                                    datasets=(V2, "openai_moderation"))
    app.include_router(router)
    _, author = store.create_key("alice", Role.POLICY_AUTHOR)
    _, reviewer = store.create_key("rita", Role.REVIEWER)
    yield TestClient(app), store, author, reviewer
    store.close()


def test_items_open_on_request_audited_and_public_positives_never(client) -> None:  # type: ignore[no-untyped-def]
    c, store, author, reviewer = client
    c.cookies.set(COOKIE, reviewer)
    assert "Sign in" in c.get("/workbench").text  # a reviewer key is not a workbench key
    c.cookies.set(COOKIE, author)
    own = load_dataset(str(REPO / V2))
    row = next(it for it in own.items if any(v == 1 for v in it.labels.values()))
    r = c.get("/workbench/items", params={"set": own.name, "id": row.id})
    assert r.status_code == 200 and "id='item-text'" in r.text
    opened = [e for e in store.audit_tail(10) if e.action == "workbench.item_opened"]
    assert opened and opened[-1].payload == {"id": row.id} and opened[-1].actor == "alice"

    oai = load_dataset("openai_moderation")
    pos = next(it for it in oai.items if it.labels.get("sexual_minors") == 1)
    neg = next(it for it in oai.items if it.labels.get("sexual_minors") == 0)
    r = c.get("/workbench/items", params={"set": oai.name, "id": pos.id})
    assert "not shown" in r.text and "item-text" not in r.text
    assert len([e for e in store.audit_tail(20) if e.action == "workbench.item_opened"]) == 1
    r = c.get("/workbench/items", params={"set": oai.name, "id": neg.id})
    assert "id='item-text'" in r.text
    assert "no item" in c.get("/workbench/items", params={"set": oai.name, "id": "nope"}).text
