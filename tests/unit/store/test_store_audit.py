"""The audit log: append-only, hash-chained, tamper detection, concurrent appends."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from childguard.store import Store
from childguard.store.audit import trigger_sql


def _fill(store: Store, n: int = 5) -> None:
    for i in range(n):
        store.append_audit("tester", "test.event", f"subject-{i}", {"i": i, "note": "é"})


def _tamper(store: Store, *statements: str) -> None:
    """Bypass the append-only triggers, as someone with database access could."""
    dialect = store.engine.dialect.name
    with store.engine.begin() as conn:
        for stmt in trigger_sql(dialect, drop=True):
            conn.execute(text(stmt))
        for stmt in statements:
            conn.exec_driver_sql(stmt)


def test_store_audit_intact_chain_verifies(store: Store) -> None:
    _fill(store)
    report = store.verify_audit()
    assert report.ok and report.rows == 5 and report.first_bad is None
    tail = store.audit_tail(2)
    assert [e.seq for e in tail] == [4, 5] and tail[-1].payload == {"i": 4, "note": "é"}


def test_store_audit_triggers_refuse_update_and_delete(store: Store) -> None:
    _fill(store, 2)
    for stmt in ("UPDATE audit_log SET actor = 'x' WHERE seq = 1",
                 "DELETE FROM audit_log WHERE seq = 2"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(stmt))
    assert store.verify_audit().ok


def test_store_audit_detects_changed_row(store: Store) -> None:
    _fill(store)
    _tamper(store, "UPDATE audit_log SET payload = '{\"i\":99,\"note\":\"é\"}' WHERE seq = 3")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 3 and "changed" in report.reason


def test_store_audit_detects_changed_actor(store: Store) -> None:
    _fill(store)
    _tamper(store, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 2


def test_store_audit_detects_removed_row(store: Store) -> None:
    _fill(store)
    _tamper(store, "DELETE FROM audit_log WHERE seq = 2")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 3 and "removed" in report.reason


def test_store_audit_detects_removed_last_row(store: Store) -> None:
    _fill(store)
    _tamper(store, "DELETE FROM audit_log WHERE seq = 5")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 5 and "head" in report.reason


def test_store_audit_detects_reordered_rows(store: Store) -> None:
    _fill(store)
    # swap rows 2 and 4 (renumber through a free seq so the primary key holds)
    _tamper(store, "UPDATE audit_log SET seq = 1000 WHERE seq = 2",
            "UPDATE audit_log SET seq = 2 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = 1000")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 2


def test_store_audit_concurrent_appends_form_one_chain(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(8):
                store.append_audit(f"w{w}", "test.concurrent", f"{w}-{i}", {"w": w, "i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = store.verify_audit()
    assert report.ok and report.rows == 32
    assert sorted((e.payload["w"], e.payload["i"]) for e in store.audit_tail(100)) == [
        (w, i) for w in range(4) for i in range(8)]


def test_store_audit_detects_row_inserted_past_the_head(store: Store) -> None:
    _fill(store, 3)
    last = store.audit_tail(1)[0]
    _tamper(store, "INSERT INTO audit_log (seq, ts, actor, action, subject, payload, prev_hash, "
                   f"hash) VALUES (4, '2026-01-01 00:00:00', 'x', 'forged', 's', '{{}}', "
                   f"'{last.hash}', '{'0' * 64}')")
    report = store.verify_audit()
    assert not report.ok and report.first_bad == 4 and "beyond the chain head" in report.reason


def test_store_audit_verify_while_appending(store: Store) -> None:
    _fill(store, 3)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 200:
            store.append_audit("w", "test.live", str(i), {"i": i})
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        reports = [store.verify_audit() for _ in range(5)]
    finally:
        stop.set()
        t.join()
    assert all(r.ok for r in reports), [r.reason for r in reports if not r.ok]
    assert store.verify_audit().ok
