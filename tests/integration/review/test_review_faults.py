"""Kill Label Studio while 50 review items are pending, restart it: every item ends up as
exactly one task and every annotation comes back (also those whose webhook could not reach us).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from review_support import ReviewEnv, review_item, wait_until

from childguard.review_bridge.config import annotation_result, prediction
from childguard.review_bridge.reconcile import reconcile
from childguard.review_bridge.status import queue_status
from childguard.schema import ReviewOutcome

pytestmark = pytest.mark.integration


def test_kill_label_studio_with_50_pending(review_env: ReviewEnv) -> None:
    env = review_env
    verdicts = env.classify([review_item(i, score=0.3 + 0.5 * i / 50) for i in range(50)])
    item_ids = [v["item_id"] for v in verdicts]
    assert all(v["decision"] == "review" for v in verdicts)
    assert env.store.outbox_stats()["depth"] == 50
    worker = env.bridge.worker()

    first = worker.run_once(limit=20)
    assert (first.created, first.failed) == (20, 0)

    # a create whose response was lost: the task landed in Label Studio, the outbox row did not
    # hear back (simulated by importing it directly, as the worker's request would have)
    lost = item_ids[20]
    row = type("Row", (), {"item_id": lost, "created_at": datetime.now(UTC)})()
    verdict = env.store.get_model_verdict(lost)
    env.client.import_tasks(env.bridge.project_id, [{
        "data": worker.task_data(row, verdict, env.store.item_info(lost)),
        "predictions": [prediction(verdict, env.bridge.policy)],
    }])  # fmt: skip

    env.ls.stop(kill=True)  # SIGKILL: no graceful shutdown
    down = worker.run_once(limit=50)
    assert down.claimed == 30 and down.failed == 30 and down.label_studio_down
    stats = env.store.outbox_stats()
    assert stats["depth"] == 30 and stats["retrying"] == 30
    status = queue_status(env.store, env.client, env.bridge.project_id)
    assert status["pending"] == 30 and status["label_studio"].startswith("unavailable")

    env.ls.start(wait_s=180)
    # rows are backing off; a worker pass at a later time picks them all up
    later = datetime.now(UTC) + timedelta(hours=1)
    after = worker.drain(now=later)
    assert (after.created, after.existing, after.failed) == (29, 1, 0)
    assert env.store.outbox_stats()["depth"] == 0

    tasks = env.tasks()
    per_item = Counter(t["data"]["item_id"] for t in tasks)
    assert set(per_item) == set(item_ids)
    assert set(per_item.values()) == {1}, "an item became more than one task"
    assert all(t["total_predictions"] == 1 for t in tasks)

    # annotate all 50; our service is down for the second half, so those webhooks fail
    by_item = {t["data"]["item_id"]: t for t in tasks}
    outcomes = {iid: (ReviewOutcome.BLOCK if i % 3 else ReviewOutcome.ALLOW)
                for i, iid in enumerate(item_ids)}
    for iid in item_ids[:25]:
        env.client.create_annotation(by_item[iid]["id"], annotation_result(outcomes[iid]))
    env.api.stop()
    for iid in item_ids[25:]:
        env.client.create_annotation(by_item[iid]["id"], annotation_result(outcomes[iid]))
    env.api.start()

    wait_until(lambda: all(env.store.review_history(iid) for iid in item_ids[:25]))
    assert sum(1 for iid in item_ids if env.store.review_history(iid)) == 25
    rec = env.bridge.reconcile()
    assert (rec.recorded, rec.duplicate) == (25, 25)
    for iid in item_ids:
        hist = env.store.review_history(iid)
        assert [(d.outcome, d.revision) for d in hist] == [(outcomes[iid], 1)], iid
    assert env.bridge.reconcile().recorded == 0  # idempotent

    # a change of mind while our service is down: the next (incremental) reconcile gets it
    changed = item_ids[0]
    (ann,) = env.client.annotations(by_item[changed]["id"])
    flipped = (ReviewOutcome.ALLOW if outcomes[changed] is not ReviewOutcome.ALLOW
               else ReviewOutcome.BLOCK)
    # the `updated_at` filter has one-second resolution (the query truncates to the second):
    # let every earlier task update fall strictly outside the window before opening it
    time.sleep(2.5)
    before_flip = datetime.now(UTC) - timedelta(seconds=1)
    env.api.stop()
    env.client.update_annotation(ann["id"], annotation_result(flipped))
    env.api.start()
    rec = reconcile(env.client, env.bridge.project_id, env.bridge.decisions, since=before_flip)
    assert (rec.tasks, rec.recorded) == (1, 1)  # only the recently updated task was read
    assert env.bridge.reconcile().recorded == 0
    assert [d.outcome for d in env.store.review_history(changed)] == [outcomes[changed], flipped]
    status = queue_status(env.store, env.client, env.bridge.project_id)
    assert (status["pending"], status["in_review"], status["done"]) == (0, 0, 50)
