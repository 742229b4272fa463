"""`childguard keys ...` and `childguard audit ...` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childguard.cli.main import main
from childguard.settings import Settings
from childguard.store import Store
from childguard.store.audit import trigger_sql


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHILDGUARD_DATABASE_URL", db_url)
    monkeypatch.delenv("CHILDGUARD_CONFIG", raising=False)
    return Settings.load()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_store_cli_keys_create_list_revoke(cli_env: Settings,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "keys", "create", "ops", "--role", "admin", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["role"] == "admin" and created["secret"].startswith("cg_")

    store = Store.from_settings(cli_env)
    try:
        assert store.authenticate(created["secret"]) is not None
    finally:
        store.close()

    code, out, _ = _run(capsys, "keys", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert "secret" not in listed[0] and created["secret"] not in out

    code, out, _ = _run(capsys, "keys", "revoke", created["key_id"])
    assert code == 0 and "revoked" in out
    code, out, _ = _run(capsys, "keys", "list")
    assert "revoked" in out and created["secret"] not in out

    code, _, err = _run(capsys, "keys", "create", "x", "--role", "root")
    assert code == 2 and "allowed: service, reviewer, policy_author, admin" in err
    code, _, err = _run(capsys, "keys", "revoke", "f" * 16)
    assert code == 2 and "no key" in err


def test_store_cli_audit_verify_and_tail(cli_env: Settings,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b", "c"):
        assert _run(capsys, "keys", "create", name, "--role", "service")[0] == 0
    code, out, _ = _run(capsys, "audit", "verify", "--json")
    verified = json.loads(out)
    assert code == 0 and verified["ok"] and verified["rows"] == 3
    assert verified["first_bad"] is None and len(verified["head_hash"]) == 64
    code, out, _ = _run(capsys, "audit", "tail", "--json", "-n", "2")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 3]

    store = Store.from_settings(cli_env)
    try:
        with store.engine.begin() as conn:
            for stmt in trigger_sql(conn.dialect.name, drop=True):
                conn.exec_driver_sql(stmt)
            conn.exec_driver_sql("UPDATE audit_log SET subject = 'forged' WHERE seq = 2")
    finally:
        store.close()
    code, out, _ = _run(capsys, "audit", "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad"] == 2
    code, _, err = _run(capsys, "audit", "verify")
    assert code == 1 and "BROKEN at row 2" in err
