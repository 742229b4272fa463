"""API keys (hashed, revocable, roles) and the FastAPI `require_role` dependency."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from childguard.errors import UserError
from childguard.serving.auth import require_role
from childguard.store import Store
from childguard.store.keys import ApiKeyInfo
from childguard.store.roles import Role


def test_store_keys_create_authenticate_revoke(store: Store) -> None:
    key_id, secret = store.create_key("chat-service", Role.SERVICE)
    assert secret.startswith(f"cg_{key_id}_") and len(secret) > 40
    info = store.authenticate(secret)
    assert info is not None and info.role is Role.SERVICE and info.name == "chat-service"
    assert store.get_key(key_id).last_used_at is not None  # type: ignore[union-attr]

    # the secret is stored nowhere, only its salted hash
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys")).one()
        assert all(secret.split("_", 2)[2] not in str(v) for v in row)

    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate(f"cg_{'0' * 16}_whatever") is None
    assert store.authenticate("not-a-key") is None
    assert store.check_key(secret + "x").reason == "unknown"

    assert store.revoke_key(key_id) is True
    assert store.revoke_key(key_id) is False  # already revoked
    assert store.revoke_key("0" * 16) is False  # unknown
    assert store.authenticate(secret) is None
    assert store.check_key(secret).reason == "revoked"
    listed = store.list_keys()
    assert [(k.key_id, k.active) for k in listed] == [(key_id, False)]
    assert store.list_keys(include_revoked=False) == []
    assert [e.action for e in store.audit_tail(5)] == ["key.created", "key.revoked"]


def test_store_keys_validate_role_and_name(store: Store) -> None:
    with pytest.raises(UserError, match="allowed: service, reviewer, policy_author, admin"):
        store.create_key("x", "superuser")
    with pytest.raises(UserError, match="1 to 128"):
        store.create_key("  ", Role.ADMIN)
    _, secret = store.create_key("ok", "Policy_Author")
    assert store.authenticate(secret).role is Role.POLICY_AUTHOR  # type: ignore[union-attr]


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.store = store

    @app.get("/classify")
    def classify(key: ApiKeyInfo = Depends(require_role(Role.SERVICE))) -> dict[str, str]:
        return {"name": key.name}

    @app.get("/review")
    def review(key: ApiKeyInfo = Depends(require_role(Role.REVIEWER, Role.POLICY_AUTHOR))
               ) -> dict[str, str]:
        return {"name": key.name}

    @app.get("/admin")
    def admin(key: ApiKeyInfo = Depends(require_role(Role.ADMIN))) -> dict[str, str]:
        return {"name": key.name}

    with TestClient(app) as c:
        yield c


def test_store_auth_role_matrix(store: Store, client: TestClient) -> None:
    secrets = {role: store.create_key(f"k-{role.value}", role)[1] for role in Role}
    allowed = {
        "/classify": {Role.SERVICE, Role.ADMIN},
        "/review": {Role.REVIEWER, Role.POLICY_AUTHOR, Role.ADMIN},
        "/admin": {Role.ADMIN},
    }
    for path, roles in allowed.items():
        for role, secret in secrets.items():
            r = client.get(path, headers={"Authorization": f"Bearer {secret}"})
            if role in roles:
                assert r.status_code == 200, (path, role)
                assert r.json() == {"name": f"k-{role.value}"}
            else:
                assert r.status_code == 403, (path, role)
                detail = r.json()["detail"]
                assert "requires role" in detail and f"has role {role.value}" in detail
    r = client.get("/review", headers={"Authorization": f"Bearer {secrets[Role.SERVICE]}"})
    assert "requires role admin or policy_author or reviewer" in r.json()["detail"]


def test_store_auth_401_cases(store: Store, client: TestClient) -> None:
    key_id, secret = store.create_key("svc", Role.SERVICE)
    assert client.get("/classify", headers={"X-API-Key": secret}).status_code == 200
    r = client.get("/classify")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/classify", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    r = client.get("/classify", headers={"X-API-Key": "garbage"})
    assert r.status_code == 401 and "invalid API key" in r.json()["detail"]
    r = client.get("/classify", headers={"X-API-Key": f"cg_{'1' * 16}_nope"})
    assert r.status_code == 401 and "unknown API key" in r.json()["detail"]
    store.revoke_key(key_id)
    r = client.get("/classify", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_store_auth_without_store_is_503() -> None:
    app = FastAPI()

    @app.get("/x")
    def x(key: ApiKeyInfo = Depends(require_role(Role.SERVICE))) -> dict[str, str]:
        return {}

    with TestClient(app) as c:
        assert c.get("/x", headers={"X-API-Key": "k"}).status_code == 503
