"""Closing the loop against a real Label Studio and a real MLflow store: classified items are
annotated through Label Studio's API (allow, block, escalate, a changed decision), the store
keeps their text encrypted under training retention, `eval snapshot-reviews` writes a version
of the `reviewed` set whose labels, revisions and digest are in MLflow (and no content is), an
evaluation runs on `reviewed@latest`, probes retrained with the reviewed train rows are
compared with the ones without, and after retention the rows stay while their content goes."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from review_support import KODAK, ReviewEnv, review_item, wait_until
from typer.testing import CliRunner

from childguard.cli.main import app
from childguard.evaluation import tracking
from childguard.evaluation.datasets import EvalDataset, EvalItem, write_file
from childguard.evaluation.reviewed import EXPERIMENT_DATASETS, ReviewedSets
from childguard.review_bridge.config import annotation_result
from childguard.schema import ReviewOutcome

pytestmark = pytest.mark.integration

#: what the reviewer decides per item (index -> outcome, categories); 8 and 9 change later
PLAN: dict[int, tuple[ReviewOutcome, list[str]]] = {
    0: (ReviewOutcome.ALLOW, []),
    1: (ReviewOutcome.BLOCK, ["grooming"]),
    2: (ReviewOutcome.ESCALATE, ["sextortion"]),
    3: (ReviewOutcome.ALLOW, []),
    4: (ReviewOutcome.BLOCK, ["grooming"]),
    5: (ReviewOutcome.ALLOW, []),
    6: (ReviewOutcome.BLOCK, ["endangerment"]),
    7: (ReviewOutcome.ALLOW, []),
    8: (ReviewOutcome.BLOCK, ["grooming"]),
    9: (ReviewOutcome.ALLOW, []),
}


def _cli(env: ReviewEnv, *args: str) -> Any:
    cli_env = {"CHILDGUARD_HOME": str(env.settings.home),
               "CHILDGUARD_POLICIES_DIR": str(env.settings.policies_dir)}
    return CliRunner().invoke(app, list(args), env=cli_env, catch_exceptions=False)


def _json(out: Any) -> Any:
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout[out.stdout.index("{"):])


def _review_ten(env: ReviewEnv) -> list[str]:
    # item 0 carries a benign photo: its bytes must never reach the evaluation side either
    verdicts = env.classify([review_item(100 + i, score=0.5,
                                         image=_photo() if i == 0 else None)
                             for i in range(10)])
    ids = [v["item_id"] for v in verdicts]
    assert {v["decision"] for v in verdicts} == {"review"}
    assert env.bridge.worker().drain().created == 10
    tasks = {t["data"]["item_id"]: t for t in env.tasks()}
    anns = {}
    for i, item_id in enumerate(ids):
        outcome, cats = PLAN[i]
        anns[i] = env.client.create_annotation(tasks[item_id]["id"],
                                               annotation_result(outcome, cats))
        # one at a time, so the decision dates (and the split by date) follow the plan
        assert wait_until(lambda item_id=item_id: env.store.review_history(item_id))
    # changed decisions: 8 block -> allow, 9 allow -> block
    env.client.update_annotation(anns[8]["id"], annotation_result(ReviewOutcome.ALLOW))
    env.client.update_annotation(anns[9]["id"], annotation_result(ReviewOutcome.BLOCK,
                                                                  ["sextortion"]))
    for i in (8, 9):
        assert wait_until(lambda i=i: len(env.store.review_history(ids[i])) == 2)
    return ids


@pytest.mark.models
def test_reviews_become_a_versioned_set_evaluated_and_learned_from(review_env: ReviewEnv,
                                                                   tmp_path: Path) -> None:
    env = review_env
    ids = _review_ten(env)

    snap = _json(_cli(env, "eval", "snapshot-reviews", "--json"))
    assert snap["ref"] == "reviewed@v1" and snap["rows"] == 10 and snap["new"] == 10
    again = _json(_cli(env, "eval", "snapshot-reviews", "--json"))
    assert again["version"] is None  # nothing changed: no new version

    # labels, revisions and the digest are in MLflow; the rows there hold no text
    client = tracking.configure(env.settings)
    run = client.get_run(snap["run_id"])
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == EXPERIMENT_DATASETS
    assert run.data.params["digest"] == snap["digest"]
    assert run.data.tags["childguard.version"] == "1"
    inputs = run.inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [
        ("reviewed@v1", snap["digest"])]
    rows_path = tracking.download(client, run.info.run_id, "reviewed/v0001.jsonl")
    rows = {r["id"]: r for r in map(json.loads, Path(rows_path).read_text().splitlines())}
    assert rows[ids[1]]["labels"]["grooming"] == 1
    assert rows[ids[2]]["labels"]["sextortion"] == 1 and rows[ids[2]]["outcome"] == "escalate"
    assert set(rows[ids[0]]["labels"].values()) == {0}
    assert (rows[ids[8]]["revision"], rows[ids[8]]["outcome"]) == (2, "allow")
    assert rows[ids[9]]["labels"]["sextortion"] == 1 and rows[ids[9]]["revisions"] == 2
    assert sorted(r["split"] for r in rows.values()).count("test") == 2
    assert run.data.metrics["review_quality.reviewed_items"] == 10
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "review_quality")}
    assert "review_quality/review_confusion.png" in artifacts

    report = _json(_cli(env, "report", "review-quality", "--format", "json"))
    assert report["reviewed_items"] == 10
    assert report["confusion"]["review"] == {"allow": 5, "block": 5}

    # evaluate on reviewed@latest with probes trained without, then with, the reviewed rows
    base = _base_set(tmp_path)
    common = ["--judge", "none", "--no-calibration", "--quiet", "--json",
              "--train-probes", str(base)]
    a = _json(_cli(env, "eval", "run", "-d", "reviewed@latest[test]", *common,
                   "--run-name", "without-reviews"))
    b = _json(_cli(env, "eval", "run", "-d", "reviewed@latest[test]", *common,
                   "--train-probes", "reviewed@latest[train]", "--run-name", "with-reviews"))
    assert a["metrics"]["items"] == b["metrics"]["items"] == 2.0
    cmp = _json(_cli(env, "eval", "compare", "without-reviews", "with-reviews", "--json"))
    # MLflow keys replace '@': the reviewed train rows are what changed between the runs
    assert tracking.mlflow_key("probe_train.reviewed@v1:train.hash") in cmp["params_changed"]

    # no text of any reviewed item anywhere in the MLflow store (database and artifacts)
    photo = _photo()
    texts = [review_item(100 + i)["text"].encode() for i in range(10)]
    _assert_no_content(env.settings.home / "mlflow",
                       [*texts, photo[len(photo) // 2:len(photo) // 2 + 256]])

    # retention ends: the snapshot's rows stay, their content goes, and eval says so
    later = datetime.now(UTC) + timedelta(days=366)
    assert env.store.purge_media(later) >= 11  # ten training copies and the photo
    ds, missing = ReviewedSets(env.settings.reviewed_dir).load("latest", env.store,
                                                               actor="eval:test")
    assert sorted(missing) == sorted(ids) and len(ds) == 10
    out = _cli(env, "eval", "run", "-d", "reviewed@latest", "--judge", "none",
               "--no-calibration", "--quiet", "--train-probes", str(base))
    assert out.exit_code == 0, out.output
    assert "10 of 10 rows lack content" in out.output
    assert "10 of 10 items have no text and were not classified" in out.output
    reads = [e for e in env.store.audit_tail(200) if e.action == "training_content.read"]
    assert reads and all(e.actor.startswith("eval:") for e in reads)


def _photo() -> bytes:
    path = KODAK / "kodim03.png"
    if not path.is_file():
        pytest.skip(f"benign Kodak test photo missing at {path} (see ../shared/datasets)")
    return path.read_bytes()


def _base_set(tmp_path: Path) -> Path:
    """A small benign-vs-category probe training set with neutral placeholder texts."""
    items = []
    for i in range(40):
        code = ("grooming", "sextortion", "endangerment")[i % 3]
        positive = i % 2 == 0
        tone = "amber" if positive else "slate"
        items.append(EvalItem(
            id=f"base-{i}", text=f"placeholder training note {i} tone {tone}",
            labels={c: int(positive and c == code) for c in ("grooming", "sextortion",
                                                             "endangerment")},
            split="train"))
    return write_file(EvalDataset("base", tuple(items), source="test"), tmp_path / "base.jsonl")


def _assert_no_content(root: Path, texts: list[bytes]) -> None:
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".db":
            con = sqlite3.connect(path)
            try:
                dump = "\n".join(con.iterdump()).encode()
            finally:
                con.close()
        else:
            dump = path.read_bytes()
        for t in texts:
            assert t not in dump, f"item text found in {path}"


def test_the_worker_snapshots_when_due_and_not_before(tmp_path: Path) -> None:
    """The review worker's periodic job: a version when the latest is older than the interval
    and a decision changed; nothing when the interval is 0 (off)."""
    from childguard.cli.review import _snapshot_if_due
    from childguard.schema import ContentItem, Decision, ReviewDecision, Verdict
    from childguard.settings import Settings
    from childguard.store import Store

    settings = Settings.load(home=tmp_path / "home", review={"snapshot_interval_hours": 0})
    store = Store.from_settings(settings)
    try:
        store.save_verdict(ContentItem(id="w-1", text="placeholder text for the worker job"),
                           Verdict(item_id="w-1", decision=Decision.REVIEW), actor="p")
        store.record_review_decision(ReviewDecision(item_id="w-1", outcome=ReviewOutcome.ALLOW,
                                                    reviewer="r"), actor="rb")
    finally:
        store.close()
    sets = ReviewedSets(settings.reviewed_dir)
    _snapshot_if_due(settings)
    assert sets.versions() == []  # off
    due = settings.model_copy(update={"review": settings.review.model_copy(
        update={"snapshot_interval_hours": 24.0})})
    _snapshot_if_due(due)
    assert sets.versions() == [1]
    snap = sets.read()
    assert snap.run_id and [r["id"] for r in snap.rows] == ["w-1"]
    store = Store.from_settings(settings)
    try:  # a changed decision ...
        store.record_review_decision(ReviewDecision(item_id="w-1", outcome=ReviewOutcome.BLOCK,
                                                    reviewer="r2"), actor="rb")
    finally:
        store.close()
    _snapshot_if_due(due)  # ... waits while the latest version is fresh
    assert sets.versions() == [1]
    soon = due.model_copy(update={"review": due.review.model_copy(
        update={"snapshot_interval_hours": 1e-9})})
    _snapshot_if_due(soon)
    assert sets.versions() == [1, 2] and sets.read().changed == ("w-1",)
