"""Store fixtures: a migrated, empty database per test, on SQLite and on PostgreSQL.

PostgreSQL isolation: this session creates and migrates one private database
(`cg_store_<random>`, dropped at the end), so other engineers' tests on the shared server never
see our rows nor we theirs; after each test every table is emptied and the audit head and
triggers restored (much faster than a database per test). PostgreSQL unreachable: skipped
locally, a failure when CI=true (CI must test both backends).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from childguard.store import Store
from childguard.store.audit import GENESIS, trigger_sql
from childguard.store.db import Base, make_engine
from childguard.store.migrate import migrate

PG_SERVER = os.environ.get("CHILDGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> Engine:
    url = PG_SERVER.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


def _db_url(name: str) -> str:
    return PG_SERVER.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_session_db() -> Iterator[str]:
    """The name of a migrated database private to this test session (dropped at the end)."""
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        reason = f"PostgreSQL at {PG_SERVER} unreachable ({type(exc).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must test the PostgreSQL store")
        pytest.skip(f"{reason}; start it to test the PostgreSQL store")
    name = f"cg_store_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # test data is disposable: do not wait for a WAL flush on every commit
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine = make_engine(_db_url(name))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            leftovers = conn.execute(text(
                "SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                {"p": name + "_"}).scalars().all()
            for extra in leftovers:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{extra}" WITH (FORCE)'))
        admin.dispose()


def _reset(url: str) -> None:
    """Empty every table and restore the seeded audit head and the append-only triggers
    (a tamper test may have dropped them): each test starts from a freshly migrated state."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for stmt in trigger_sql("postgresql", drop=True):
                conn.exec_driver_sql(stmt)
            # DELETE, not TRUNCATE: a few rows, and TRUNCATE rewrites every table file
            for table in reversed(Base.metadata.sorted_tables):
                conn.exec_driver_sql(f'DELETE FROM "{table.name}"')
            conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :g)"),
                         {"g": GENESIS})
            for stmt in trigger_sql("postgresql"):
                conn.exec_driver_sql(stmt)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg_session_db: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test."""
    url = _db_url(pg_session_db)
    try:
        yield url
    finally:
        _reset(url)


@pytest.fixture
def pg_empty_url(pg_session_db: str) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema of the session database."""
    schema = f"empty_{secrets.token_hex(4)}"
    admin = create_engine(_db_url(pg_session_db).replace("postgresql://",
                                                          "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{_db_url(pg_session_db)}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def store(db_url: str, media_dir: Path) -> Iterator[Store]:
    engine = make_engine(db_url)
    migrate(engine)
    s = Store(engine, media_dir=media_dir, media_retention_hours=24.0)
    try:
        yield s
    finally:
        s.close()
