"""The `reviewed` evaluation set and the review-quality report, over a real (SQLite) store:
labels from the latest revision, versions that only change when decisions do, a split by
decision date, text resolved from the restricted store and purged rows named; overturns,
confusion, agreement and SLA counted from the decisions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from childguard.errors import NotFound, UserError
from childguard.evaluation.review_quality import format_review_quality, review_quality
from childguard.evaluation.reviewed import ReviewedSets, build_rows, digest, parse_ref
from childguard.policy import load_policy, resolve_policy_path
from childguard.schema import (
    CategoryScore,
    ContentItem,
    Decision,
    ReviewDecision,
    ReviewOutcome,
    Verdict,
)
from childguard.settings import ReviewSettings, Settings
from childguard.store import Store
from childguard.store.db import make_engine
from childguard.store.migrate import migrate

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def policy():  # type: ignore[no-untyped-def]
    s = Settings()
    return load_policy(resolve_policy_path(s.policy, s.policies_dir))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    s = Store(engine, media_dir=tmp_path / "media", media_retention_hours=24.0,
              training_retention_days=365.0, training_key=tmp_path / "keys" / "k")
    try:
        yield s
    finally:
        s.close()


def _model(store: Store, item_id: str, decision: Decision, flagged: dict[str, float],
           at: datetime = T0) -> None:
    cats = tuple(CategoryScore(code=c, score=v, decision=decision, source="combined")
                 for c, v in flagged.items())
    store.save_verdict(ContentItem(id=item_id, text=f"benign text number {item_id}"),
                       Verdict(item_id=item_id, decision=decision, categories=cats,
                               created_at=at), actor="p")


def _decide(store: Store, item_id: str, outcome: ReviewOutcome, cats: tuple[str, ...] = (),
            *, reviewer: str = "r1", at: datetime) -> None:
    store.record_review_decision(ReviewDecision(
        item_id=item_id, outcome=outcome, reviewer=reviewer, categories=cats,
        decided_at=at), actor="rb")


def _seed(store: Store) -> None:
    # a: model review (grooming), reviewer blocks grooming within the hour
    _model(store, "a", Decision.REVIEW, {"grooming": 0.6})
    _decide(store, "a", ReviewOutcome.BLOCK, ("grooming",), at=T0 + timedelta(minutes=30))
    # b: model review (sextortion), reviewer allows: an overturn (false alarm)
    _model(store, "b", Decision.REVIEW, {"sextortion": 0.5})
    _decide(store, "b", ReviewOutcome.ALLOW, at=T0 + timedelta(hours=1))
    # c: escalated, then changed to allow by a second reviewer (a changed decision)
    _model(store, "c", Decision.REVIEW, {"grooming": 0.7})
    _decide(store, "c", ReviewOutcome.ESCALATE, ("grooming",), at=T0 + timedelta(minutes=45))
    _decide(store, "c", ReviewOutcome.ALLOW, reviewer="r2", at=T0 + timedelta(hours=3))
    # d, e: two more agreed blocks, the last one decided after its SLA
    _model(store, "d", Decision.REVIEW, {"endangerment": 0.4})
    _decide(store, "d", ReviewOutcome.BLOCK, ("endangerment",), at=T0 + timedelta(hours=4))
    _model(store, "e", Decision.REVIEW, {"grooming": 0.5})
    _decide(store, "e", ReviewOutcome.BLOCK, ("sextortion",), at=T0 + timedelta(days=5))
    # f: still pending (never decided)
    _model(store, "f", Decision.REVIEW, {"grooming": 0.5})


def test_rows_take_the_latest_revision_and_split_by_decision_date(store: Store,
                                                                  policy) -> None:  # type: ignore[no-untyped-def]
    _seed(store)
    rows = {r["id"]: r for r in build_rows(store, policy.spec.codes)}
    assert set(rows) == {"a", "b", "c", "d", "e"}  # f has no decision
    assert rows["a"]["labels"]["grooming"] == 1 and rows["a"]["labels"]["sextortion"] == 0
    assert set(rows["b"]["labels"].values()) == {0}  # allow: every category 0
    assert rows["c"]["outcome"] == "allow" and rows["c"]["revision"] == 2
    assert rows["c"]["revisions"] == 2 and rows["c"]["reviewers"] == ["r1", "r2"]
    assert rows["c"]["model_decision"] == "review"
    assert rows["c"]["model_scores"] == {"grooming": 0.7}
    assert rows["a"]["text_sha256"] and "text" not in rows["a"]
    # the newest 20% (1 of 5) is the test split: e, decided last
    assert [k for k, r in rows.items() if r["split"] == "test"] == ["e"]


def test_versions_change_only_when_decisions_do(store: Store, policy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(store)
    sets = ReviewedSets(tmp_path / "reviewed")
    with pytest.raises(NotFound, match="no snapshot yet"):
        sets.read()
    v1 = sets.snapshot(store, policy.spec.codes, now=T0 + timedelta(days=6))
    assert v1 is not None and v1.version == 1 and len(v1.new) == 5
    assert sets.snapshot(store, policy.spec.codes, now=T0 + timedelta(days=6)) is None
    _decide(store, "b", ReviewOutcome.BLOCK, ("sextortion",), reviewer="r2",
            at=T0 + timedelta(days=6))
    v2 = sets.snapshot(store, policy.spec.codes, now=T0 + timedelta(days=7))
    assert v2 is not None and v2.version == 2
    assert v2.changed == ("b",) and v2.new == ()
    assert v2.digest != v1.digest == sets.read("v1").digest == digest(list(v1.rows))
    assert sets.read("latest").version == 2 and sets.resolve("1") == 1
    with pytest.raises(NotFound, match="have v1, v2"):
        sets.read("v9")
    assert parse_ref("reviewed@v2[train]") == ("v2", ("train",))
    assert parse_ref("reviewed") == ("latest", ())
    with pytest.raises(UserError, match="splits train and test"):
        parse_ref("reviewed@latest[calib]")


def test_load_resolves_text_and_names_rows_without_content(store: Store, policy,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    _seed(store)
    sets = ReviewedSets(tmp_path / "reviewed")
    sets.snapshot(store, policy.spec.codes, now=T0 + timedelta(days=6))
    # everything decided on day 0 goes past its 365-day retention; e (day 5) stays
    store.purge_media(T0 + timedelta(days=366))
    ds, missing = sets.load("latest", store, actor="eval:test")
    assert sorted(missing) == ["a", "b", "c", "d"]
    by_id = {it.id: it for it in ds}
    assert by_id["e"].text == "benign text number e"
    assert by_id["a"].text is None and by_id["a"].labels["grooming"] == 1  # labels stay
    assert ds.name == "reviewed@v1"
    test_only, _ = sets.load("v1", store, actor="eval:test", splits=("test",))
    assert [it.id for it in test_only] == ["e"] and test_only.name == "reviewed@v1:test"
    assert store.audit_tail(1)[0].action == "training_content.read"


def test_review_quality_counts(store: Store, policy) -> None:  # type: ignore[no-untyped-def]
    _seed(store)
    rep = review_quality(store, policy, ReviewSettings(), now=T0 + timedelta(days=6))
    assert rep["reviewed_items"] == 5
    # b (allowed), c (finally allowed), e (other category than the model's) are overturns
    assert sorted(rep["overturned_item_ids"]) == ["b", "c", "e"]
    assert rep["overturn_by_category"]["grooming"] == {"items": 3, "overturned": 2,
                                                       "rate": pytest.approx(2 / 3)}
    assert rep["confusion"]["review"] == {"allow": 2, "block": 3}
    assert rep["per_category"]["grooming"]["flagged/labelled"] == 1
    # c was seen by two reviewers who disagreed
    assert rep["agreement"] == {"items_with_two_or_more_reviewers": 1, "pairs": 1,
                                "agreeing_pairs": 0, "rate": 0.0}
    sla = rep["sla"]
    decided = sum(v["decided"] for v in sla.values())
    within = sum(v["within_sla"] for v in sla.values())
    assert (decided, within) == (5, 4)  # e took five days
    assert sum(v["pending"] for v in sla.values()) == 1  # f
    assert sum(v["pending_overdue"] for v in sla.values()) == 1
    text = format_review_quality(rep)
    assert "Overturned: 3 (60.0%)" in text and "benign text" not in text
