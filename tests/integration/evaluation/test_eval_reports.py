"""Transparency and CyberTipline reports from a real (SQLite) store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from childguard.cli.main import app
from childguard.errors import NotFound
from childguard.evaluation.reports import cybertip, format_transparency, transparency
from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    ReviewDecision,
    ReviewOutcome,
    Verdict,
)
from childguard.settings import Settings
from childguard.store.store import Store

pytestmark = pytest.mark.integration


def _verdict(item_id: str, decision: Decision, code: str | None = None,
             score: float = 0.0) -> Verdict:
    cats = () if code is None else (CategoryScore(code=code, score=score, decision=decision),)
    return Verdict(item_id=item_id, decision=decision, categories=cats, judged=True,
                   policy_id="child_safety", policy_version="v1")


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("reports")
    settings = Settings.load(home=home / "home")
    store = Store.from_settings(settings)
    cases = [
        ("i1", Decision.ALLOW, None, 0.0, None),
        ("i2", Decision.REVIEW, "sexual_minors", 0.5,
         (ReviewOutcome.ESCALATE, ("sexual_minors",))),
        ("i3", Decision.BLOCK, "grooming", 0.95, (ReviewOutcome.ALLOW, ())),
        ("i4", Decision.REVIEW, "sexual_minors", 0.4, None),
        ("i5", Decision.BLOCK, "grooming", 0.97, None),
    ]
    for item_id, decision, code, score, review in cases:
        # neutral placeholder text: the store keeps only its hash
        store.save_verdict(ContentItem(id=item_id, text=f"placeholder {item_id}"),
                           _verdict(item_id, decision, code, score), actor="test")
        if review is not None:
            store.record_review_decision(
                ReviewDecision(item_id=item_id, outcome=review[0], reviewer="alice",
                               categories=review[1], comment="checked"), actor="test")
    store.close()
    return settings


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


def test_transparency_counts(store_settings: Settings) -> None:
    store = Store.from_settings(store_settings)
    try:
        rep = transparency(store, *_window())
        empty = transparency(store, datetime(2020, 1, 1, tzinfo=UTC),
                             datetime(2020, 2, 1, tzinfo=UTC))
    finally:
        store.close()
    assert rep["items_classified"] == 5
    assert rep["decisions"] == {"allow": 2, "review": 1, "block": 2}
    assert rep["decisions_by_category"] == {
        "grooming": {"allow": 0, "review": 0, "block": 1},
        "none": {"allow": 2, "review": 0, "block": 0},
        "sexual_minors": {"allow": 0, "review": 1, "block": 1},
    }
    assert (rep["automated"], rep["human"]) == (3, 2)
    assert rep["human_share"] == pytest.approx(0.4)
    sla = rep["review_sla_hours"]
    assert rep["sent_to_review"] == 2 and sla["reviewed"] == 1 and sla["pending"] == 1
    assert 0.0 <= sla["p50"] < 1.0
    # the window ends an hour from now: the pending item is aged to now (seconds), not to
    # the window's end (an hour more)
    assert sla["oldest_pending"] is not None and sla["oldest_pending"] < 0.25
    store = Store.from_settings(store_settings)
    try:
        later = transparency(store, *_window(), now=datetime.now(UTC) + timedelta(minutes=30))
    finally:
        store.close()
    assert 0.45 < later["review_sla_hours"]["oldest_pending"] < 0.75
    assert rep["overturn"] == {"eligible": 1, "overturned": 1, "rate": 1.0}
    assert rep["reports_confirmed_by_reviewers"] == 1
    assert empty["items_classified"] == 0 and empty["human_share"] is None
    md = format_transparency(rep, "md")
    assert "| sexual_minors | 0 | 1 | 1 |" in md
    assert "section,key,value" in format_transparency(rep, "csv")


def test_cybertip_export(store_settings: Settings) -> None:
    store = Store.from_settings(store_settings)
    try:
        tip = cybertip(store, "i2")
        pending = cybertip(store, "i4")
        with pytest.raises(NotFound):
            cybertip(store, "nope")
    finally:
        store.close()
    assert tip["sent"] is False and tip["ready_to_file"] is True
    assert tip["incident"]["incident_types"] == [
        "Child Pornography (possession, manufacture, and distribution)"]
    assert tip["reviewer_classification"]["outcome"] == "escalate"
    assert tip["reviewer_classification"]["has_comment"] is True
    assert "checked" not in json.dumps(tip)  # reviewer free text is not exported
    assert tip["item"]["content_hashes"], "the item's content hashes are exported"
    assert "placeholder" not in json.dumps(tip)
    assert pending["ready_to_file"] is False and pending["not_ready_reasons"]


def test_report_cli(store_settings: Settings, tmp_path: Path) -> None:
    env = {"CHILDGUARD_HOME": str(store_settings.home)}
    start, end = (d.isoformat() for d in _window())
    r = CliRunner().invoke(app, ["report", "transparency", "--from", start, "--to", end,
                                 "--format", "json"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["items_classified"] == 5
    out = tmp_path / "tip.json"
    r = CliRunner().invoke(app, ["report", "cybertip", "i2", "-o", str(out)], env=env,
                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(out.read_text())["ready_to_file"] is True
