"""The outbox: claim, lease, done, failed with backoff, stats; no double claims."""

from __future__ import annotations

import threading
from datetime import timedelta

from childguard.schema import ContentItem, Decision, Verdict
from childguard.store import Store
from childguard.store.models import utcnow


def _enqueue(store: Store, n: int) -> list[str]:
    ids = [f"ob-{i}" for i in range(n)]
    for item_id in ids:
        store.save_verdict(ContentItem(id=item_id, text="a benign question"),
                           Verdict(item_id=item_id, decision=Decision.REVIEW), actor="p")
    return ids


def test_store_outbox_claim_done_failed_backoff(store: Store) -> None:
    _enqueue(store, 3)
    now = utcnow() + timedelta(seconds=1)
    assert store.outbox_stats(now)["depth"] == 3
    first = store.claim_outbox(2, now=now)
    assert [o.item_id for o in first] == ["ob-0", "ob-1"]
    assert all(o.attempts == 1 for o in first)
    rest = store.claim_outbox(10, now=now)
    assert [o.item_id for o in rest] == ["ob-2"]  # leased rows are not handed out twice
    assert store.claim_outbox(10, now=now) == []

    store.outbox_done(first[0].id, "task-1")
    store.outbox_done(first[0].id, "task-1")  # idempotent
    assert store.item_info("ob-0").task_ref == "task-1"

    retry_at = now + timedelta(seconds=30)
    store.outbox_failed(first[1].id, "label studio: 503", retry_at)
    stats = store.outbox_stats(now)
    assert stats["depth"] == 2 and stats["done"] == 1 and stats["retrying"] == 1
    assert store.claim_outbox(10, now=now + timedelta(seconds=29)) == []  # backing off
    again = store.claim_outbox(10, now=retry_at)
    assert [(o.item_id, o.attempts, o.last_error) for o in again] == [
        ("ob-1", 2, "label studio: 503")]

    # a late failure report cannot resurrect finished work
    store.outbox_failed(first[0].id, "late", retry_at)
    assert store.item_info("ob-0").outbox_status == "done"
    # an expired lease (crashed worker) makes the row claimable again
    later = now + store.outbox_lease + timedelta(seconds=1)
    reclaimed = store.claim_outbox(10, now=later)
    assert sorted(o.item_id for o in reclaimed) == ["ob-2"]
    assert store.outbox_stats(later)["oldest_age_s"] > store.outbox_lease.total_seconds()
    for o in [*again, *reclaimed]:
        store.outbox_done(o.id, f"task-{o.item_id}")
    assert store.outbox_stats()["depth"] == 0 and store.outbox_stats()["oldest_age_s"] == 0.0
    assert store.verify_audit().ok


def test_store_outbox_concurrent_claims_never_overlap(store: Store) -> None:
    _enqueue(store, 12)
    now = utcnow() + timedelta(seconds=1)
    got: list[list[str]] = [[] for _ in range(3)]

    def worker(w: int) -> None:
        while batch := store.claim_outbox(2, now=now):
            got[w].extend(o.item_id for o in batch)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for g in got for i in g]
    assert sorted(claimed) == sorted(f"ob-{i}" for i in range(12))  # each exactly once
