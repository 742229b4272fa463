"""The module-scoped Ray Serve fixture of the serving integration tests (see serving_support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving_support import Served, add_to_bank, kodak, make_settings

from childguard.store.roles import Role
from childguard.store.store import Store
from ports import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from childguard.serving.app import AppArgs, start_local, stop_local

    home = tmp_path_factory.mktemp("serve-home")
    settings = make_settings(home)
    store = Store.from_settings(settings)
    keys = {}
    for role in Role:
        _, keys[role.value] = store.create_key(f"test-{role.value}", role)
    revoked_id, keys["revoked"] = store.create_key("test-revoked", Role.ADMIN)
    store.revoke_key(revoked_id)
    keys["unknown"] = "cg_0123456789abcdef_notarealsecret"
    banked = kodak(23)
    assert add_to_bank(settings, store, banked)
    args = AppArgs(models="reference", hash_refresh_s=1.0)
    url = start_local(settings, args, num_cpus=2, port=free_port())
    try:
        yield Served(url=url, settings=settings, store=store, keys=keys, banked_image=banked)
    finally:
        stop_local()
        store.close()
