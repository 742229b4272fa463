"""Hash banks survive a restart on PostgreSQL (the SQLite twin is in tests/unit/hashing).

Runs in a private schema (the `pg_engine` fixture in conftest.py, dropped afterwards).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine

from childguard.hashing.service import HashService
from childguard.hashing.store import NewEntry
from childguard.schema import Severity
from childguard.settings import Settings
from childguard.store.migrate import migrate

pytestmark = pytest.mark.integration

KODAK = (Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "images" /
         "kodak").resolve()


def _png(seed: int) -> bytes:
    if KODAK.is_dir():
        return (KODAK / f"kodim{seed:02d}.png").read_bytes()
    img = Image.effect_mandelbrot((256, 256), (-2 + seed * 0.1, -1.5, 1, 1.5), 100)
    out = io.BytesIO()
    img.convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_banks_survive_restart_on_postgres(pg_engine: Engine, tmp_path: Path) -> None:
    migrate(pg_engine)
    settings = Settings.load(home=tmp_path / "home",
                             database_url=pg_engine.url.render_as_string(hide_password=False))
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
