"""Dataset loaders: the shared public sets (counts from their README), our format, reviews."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from childguard.errors import UserError
from childguard.evaluation.datasets import (
    _MAYBE_CHILD,
    CHILD_SPECIFIC,
    EvalItem,
    labels_from_review,
    load_dataset,
    load_file,
    load_openai_moderation,
    load_xstest,
    write_file,
)
from childguard.schema import ReviewDecision, ReviewOutcome

CODES = ("sexual_minors", "grooming")


def test_openai_moderation_counts(datasets_dir: Path) -> None:
    ds = load_openai_moderation(datasets_dir)
    # README: S3=1: 39, S3=0: 449, S3 unknown: 348 (left out)
    assert len(ds) == 39 + 449
    labels = ds.summary()["labels"]
    assert labels["sexual_minors"] == {"positive": 39, "negative": 449}
    # rows that are not sexual/minors and name no child: negatives for the child-specific
    # categories (only negatives: the set has no positive for them)
    assert set(labels) == {"sexual_minors", *CHILD_SPECIFIC}
    for code in CHILD_SPECIFIC:
        assert labels[code]["positive"] == 0 and 200 < labels[code]["negative"] < 449
    assert all(it.id.startswith("oai-") for it in ds)
    assert load_openai_moderation(datasets_dir).content_hash == ds.content_hash


def test_openai_child_specific_negatives_name_no_child(datasets_dir: Path) -> None:
    """A row is called negative for grooming / sextortion / endangerment only when it is not
    sexual/minors and no word that might mean a child appears in it (ids only are compared)."""
    ds = load_openai_moderation(datasets_dir, unknown_negative=True)
    negatives = [it for it in ds if "endangerment" in it.labels]
    others = [it for it in ds if "endangerment" not in it.labels]
    assert negatives and others
    assert all(it.labels["sexual_minors"] == 0 for it in negatives)
    assert all(set(CHILD_SPECIFIC) <= set(it.labels) for it in negatives)
    assert not any(_MAYBE_CHILD.search(it.text or "") for it in negatives)
    # every row left unlabelled for them is a positive or names a possible child
    assert all(it.labels["sexual_minors"] == 1 or _MAYBE_CHILD.search(it.text or "")
               for it in others)
    assert _MAYBE_CHILD.search("my 12 yo nephew") and _MAYBE_CHILD.search("her daughter")
    assert not _MAYBE_CHILD.search("how do I kill a python process")


def test_xstest_safe_only_by_default(datasets_dir: Path) -> None:
    ds = load_xstest(datasets_dir)
    assert len(ds) == 250
    assert all(it.labels == {"sexual_minors": 0} for it in ds)
    full = load_xstest(datasets_dir, include_unsafe=True)
    positives = [it for it in full if it.labels.get("sexual_minors") == 1]
    assert len(positives) == 1  # the one unsafe prompt whose focus is about children
    assert 250 < len(full) < 450  # ambiguous foci left out


def test_summary_has_no_text(datasets_dir: Path) -> None:
    ds = load_dataset("xstest", datasets_dir)
    dumped = json.dumps(ds.summary())
    assert not any(it.text and it.text in dumped for it in ds)


def test_own_jsonl_and_csv(tmp_path: Path) -> None:
    p = tmp_path / "set.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "text": "hello", "labels": {"grooming": 1, "sexual_minors": None},
         "split": "test", "context": ["earlier", {"author": "sender", "text": "more"}]},
        {"id": "b", "text": "there", "labels": {"grooming": 0}, "split": "train"},
    ]) + "\n")
    ds = load_file(p)
    assert ds.name == "set" and [it.id for it in ds] == ["a", "b"]
    assert ds.items[0].labels == {"grooming": 1}  # null = unknown, left out
    assert [m.author for m in ds.items[0].context] == ["other", "sender"]
    assert len(load_dataset(f"{p}[test]")) == 1
    assert load_dataset(f"{p}[test,train]").name == "set:test-train"
    c = tmp_path / "set.csv"
    c.write_text("id,text,label_grooming,split\nx,hi,1,dev\ny,yo,,dev\n")
    cds = load_file(c)
    assert cds.items[0].labels == {"grooming": 1} and cds.items[1].labels == {}
    # round trip through our writer keeps the hash
    assert load_file(write_file(ds, tmp_path / "copy.jsonl")).content_hash == ds.content_hash


@pytest.mark.parametrize("row, msg", [
    ({"text": "x"}, "non-empty 'id'"),
    ({"id": "a", "text": "x", "labels": {"grooming": 2}}, "must be 0, 1 or null"),
    ({"id": "a", "text": "x", "split": "prod"}, "is not one of"),
])
def test_own_format_errors_say_what_is_allowed(tmp_path: Path, row: dict, msg: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=msg):
        load_file(p)


def test_unknown_dataset_name() -> None:
    with pytest.raises(UserError, match="openai_moderation"):
        load_dataset("nope")


def test_review_labels() -> None:
    def d(outcome: ReviewOutcome, cats: tuple[str, ...] = (), rev: int = 1) -> ReviewDecision:
        return ReviewDecision(item_id="i", outcome=outcome, reviewer="r", categories=cats,
                              revision=rev, decided_at=datetime(2026, 1, rev, tzinfo=UTC))

    assert labels_from_review(d(ReviewOutcome.ALLOW), CODES) == {"sexual_minors": 0,
                                                                 "grooming": 0}
    assert labels_from_review(d(ReviewOutcome.BLOCK, ("grooming",)), CODES) == {
        "sexual_minors": 0, "grooming": 1}
    assert labels_from_review(d(ReviewOutcome.ESCALATE), CODES) == {"any": 1}



def test_any_positive() -> None:
    assert EvalItem("a", "t", {}).any_positive is None
    assert EvalItem("a", "t", {"x": 0, "y": 1}).any_positive == 1


def test_openai_moderation_halves_are_stratified_and_stable(datasets_dir: Path) -> None:
    ds = load_openai_moderation(datasets_dir)
    train, test = load_dataset("openai_moderation[train]", datasets_dir), \
        load_dataset("openai_moderation[test]", datasets_dir)
    assert {it.split for it in ds} == {"train", "test"}
    assert {it.id for it in train}.isdisjoint({it.id for it in test})
    assert len(train) + len(test) == len(ds)
    pos = [sum(it.labels["sexual_minors"] for it in half) for half in (train, test)]
    assert sorted(pos) == [19, 20]  # the 39 positives split evenly
    assert abs(len(train) - len(test)) <= 2
    assert [it.split for it in load_openai_moderation(datasets_dir)] == [it.split for it in ds]


def test_openai_moderation_all_counts_unknown_as_negative_and_keeps_splits(
        datasets_dir: Path) -> None:
    known = load_openai_moderation(datasets_dir)
    every = load_dataset("openai_moderation_all", datasets_dir)
    assert every.name == "openai_moderation_all" and len(every) == 39 + 449 + 348
    assert every.summary()["labels"]["sexual_minors"] == {"positive": 39, "negative": 449 + 348}
    split_of = {it.id: it.split for it in known}
    assert all(split_of[it.id] == it.split for it in every if it.id in split_of)
    unknown = [it for it in every if it.meta.get("s3") == "unknown"]
    assert len(unknown) == 348 and {it.split for it in unknown} == {"train", "test"}
    assert known.content_hash == load_openai_moderation(datasets_dir).content_hash


def test_braces_keep_only_some_categories_labels(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "t", "labels": {"grooming": 1}, "split": "train"},
        {"id": "b", "text": "t", "labels": {"sexual_minors": 1}, "split": "train"},
        {"id": "c", "text": "t", "labels": {"grooming": 0, "sexual_minors": 0}, "split": "test"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(f"{path}[train,test]{{grooming}}")
    assert ds.name == "set:train-test:only-grooming"
    assert [(it.id, it.labels) for it in ds] == [("a", {"grooming": 1}), ("c", {"grooming": 0})]
    with pytest.raises(UserError, match="labels no endangerment"):
        load_dataset(f"{path}{{endangerment}}")
    with pytest.raises(UserError, match="at least one category"):
        load_dataset(f"{path}{{}}")
