"""Alembic migrations: the migrated schema equals the table models (drift is caught here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from childguard.store.db import Base, _import_table_modules, make_engine
from childguard.store.migrate import MIGRATIONS_DIR, alembic_config, schema_diff, upgrade


def _check_upgrade_matches_models(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)  # alembic only: no create_all fallback here
        diff = schema_diff(engine)
        assert diff == [], (
            "the migrations do not match the table models; add a revision "
            f"(src/childguard/store/migrations/README.md): {diff}")
        _import_table_modules()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        upgrade(engine)  # idempotent
    finally:
        engine.dispose()


def test_store_migrations_match_metadata_sqlite(tmp_path: Path) -> None:
    _check_upgrade_matches_models(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.integration
def test_store_migrations_match_metadata_postgresql(pg_empty_url: str) -> None:
    _check_upgrade_matches_models(pg_empty_url)


def test_store_migrations_one_head_and_shipped_with_the_package() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()


def test_store_migrations_create_missing_tables_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A table without a revision yet is created by migrate() (parallel work is not blocked)
    but named in a warning; the drift tests above fail on it."""
    from sqlalchemy import Column, Integer, Table

    from childguard.store.migrate import migrate

    url = f"sqlite:///{tmp_path / 'x.db'}"
    extra = Table("zz_store_test_unmigrated", Base.metadata, Column("id", Integer,
                                                                     primary_key=True))
    try:
        engine = make_engine(url)
        with caplog.at_level("WARNING"):
            migrate(engine)
        assert "zz_store_test_unmigrated" in inspect(engine).get_table_names()
        assert "zz_store_test_unmigrated" in caplog.text
        engine.dispose()
    finally:
        Base.metadata.remove(extra)
    assert "zz_store_test_unmigrated" not in Base.metadata.tables


def test_store_unreachable_database_is_a_dependency_error(tmp_path: Path) -> None:
    from childguard.errors import DependencyError
    from childguard.settings import Settings
    from childguard.store import Store

    settings = Settings.load(home=tmp_path,
                             database_url="postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises(DependencyError, match=r"127\.0\.0\.1:9/none is unreachable"):
        Store.from_settings(settings)


def test_store_migrations_adopt_a_pre_migration_database(tmp_path: Path) -> None:
    """Development databases made by the old `create_all` are adopted at head, not broken."""
    from sqlalchemy.exc import DBAPIError

    from childguard.store import Store
    from childguard.store.migrate import migrate

    _import_table_modules()
    engine = make_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    Base.metadata.create_all(engine)
    migrate(engine)
    assert schema_diff(engine) == []
    store = Store(engine)
    store.append_audit("t", "test", "s", {})
    assert store.verify_audit().ok
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log")
    engine.dispose()
