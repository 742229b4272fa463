"""Hash banks survive a restart on PostgreSQL (the SQLite twin is in tests/unit/hashing).

Runs in a private schema (dropped afterwards), so it never touches tables other engineers'
tests create in the shared `test` database at the same time. With CI=true a server that is down
fails the test; on a dev machine without PostgreSQL it is skipped with the reason.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, create_engine, text

from childguard.hashing.service import HashService
from childguard.hashing.store import NewEntry
from childguard.schema import Severity
from childguard.settings import Settings
from childguard.store.migrate import migrate

pytestmark = pytest.mark.integration

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KODAK = (Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "images" /
         "kodak").resolve()


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    schema = f"hashing_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432/test is not reachable: {exc}")
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _png(seed: int) -> bytes:
    if KODAK.is_dir():
        return (KODAK / f"kodim{seed:02d}.png").read_bytes()
    img = Image.effect_mandelbrot((256, 256), (-2 + seed * 0.1, -1.5, 1, 1.5), 100)
    out = io.BytesIO()
    img.convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_banks_survive_restart_on_postgres(pg_engine: Engine, tmp_path: Path) -> None:
    migrate(pg_engine)
    settings = Settings.load(home=tmp_path / "home", database_url=PG_URL)
    svc = HashService.from_settings(settings, pg_engine)
    svc.ensure_bank("known", category="sexual_minors", severity=Severity.CRITICAL, source="tx")
    svc.ensure_bank("allow", negative=True)
    a, b = _png(1), _png(2)
    ids = svc.add_bytes("known", a, added_by="pg-test", metadata={"case": "1"})
    assert svc.add_bytes("known", a, added_by="pg-test") == ids  # merged, not doubled
    svc.add_bytes("known", b, added_by="pg-test")
    svc.add_hashes("known", [NewEntry("md5", "ab" * 16, {"src": "list"})], added_by="pg-test")
    assert svc.remove_bytes("known", b, removed_by="pg-test") == 3
    svc.set_enabled("allow", False)

    restarted = HashService.from_settings(settings, pg_engine)
    banks = {bk.name: bk for bk in restarted.banks()}
    assert banks["known"].severity is Severity.CRITICAL and banks["known"].source == "tx"
    assert banks["allow"].negative and not banks["allow"].enabled
    hit = restarted.check(a).decisive
    assert hit is not None and hit.bank == "known"
    assert restarted.entry_metadata([ids[0]]) == {ids[0]: {"case": "1"}}
    assert restarted.check(b).matches == ()
    stats = {s["name"]: s for s in restarted.repo.stats()}["known"]
    assert stats["live_total"] == 4 and stats["removed"] == 3
    exported = list(restarted.repo.export_entries(banks["known"].id))
    assert ("md5", "ab" * 16) in [(st, v) for st, v, _, _ in exported]
