"""Alembic, driven from Python: `upgrade(engine)`, `schema_diff(engine)`, `revision(message)`.

The migration scripts ship inside the package (`childguard/store/migrations/`), so an installed
service migrates itself at start-up (`Store.from_settings` -> `migrate()` here) without an
alembic.ini on disk. `migrate()` lives here, not in `db`: `db` imports nothing of the store, so
its modules import one way (db <- models <- audit <- migrate <- store).
Concurrent start-ups are safe: on PostgreSQL the upgrade holds an advisory lock, on SQLite it
runs inside `BEGIN IMMEDIATE` (one writer, the others wait and then find the schema at head).

Add a revision (after changing a table): `python -m childguard.store.migrate revision -m "what"`
(see migrations/README.md).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: pg_advisory_lock key for schema upgrades ("cgmigrat")
PG_LOCK_KEY = 0x63676D6967726174


def alembic_config(connection: Any | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, target: str = "head") -> None:
    """Bring `engine`'s database to `target`, serialised against concurrent upgrades."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
            try:
                _upgrade(conn, target)
                conn.commit()
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            _upgrade(conn, target)
            conn.commit()
        else:
            _upgrade(conn, target)
            conn.commit()


def _upgrade(conn: Connection, target: str) -> None:
    cfg = alembic_config(conn)
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables and {"items", "audit_log"} <= tables:
        # a database made by the pre-migration `create_all` (development builds only):
        # complete it the same way and adopt it at head instead of failing on CREATE TABLE
        from childguard.store.db import Base, _import_table_modules

        _import_table_modules()
        log.warning("database has childguard tables but no alembic_version; adopting it at "
                    "head (created before migrations existed)")
        Base.metadata.create_all(conn)
        from childguard.store.audit import trigger_sql

        for stmt in trigger_sql(conn.dialect.name):
            conn.exec_driver_sql(stmt)
        command.stamp(cfg, "head")
        return
    command.upgrade(cfg, target)


def migrate(engine: Engine, *, create_missing: bool = True) -> None:
    """Bring the schema up to date: `alembic upgrade head` (scripts in store/migrations/).

    Tables declared on `Base` but not yet covered by a revision (a table owner added one and
    nobody has generated the revision yet) are created with a warning when `create_missing`,
    so parallel work is not blocked; the test `test_store_migrations_match_metadata` fails on
    such drift, so it cannot reach a release.
    """
    from childguard.store.db import Base, _import_table_modules

    _import_table_modules()
    upgrade(engine)
    if create_missing:
        from sqlalchemy import inspect

        existing = set(inspect(engine).get_table_names())
        missing = [t for t in Base.metadata.sorted_tables if t.name not in existing]
        if missing:
            import logging

            logging.getLogger(__name__).warning(
                "tables %s have no migration yet; created directly (add a revision: "
                "python -m childguard.store.migrate revision -m ...)",
                ", ".join(t.name for t in missing))
            Base.metadata.create_all(engine, tables=missing)


def schema_diff(engine: Engine) -> list[Any]:
    """Differences between the database schema and `Base.metadata` (empty when in sync)."""
    from childguard.store.db import Base, _import_table_modules

    _import_table_modules()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def revision(message: str, *, autogenerate: bool = True) -> None:
    """Write a new revision: autogenerated against a scratch SQLite database at head."""
    from childguard.store.db import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        engine = make_engine(url)
        upgrade(engine)
        with engine.connect() as conn:
            cfg = alembic_config(conn)
            command.revision(cfg, message=message, autogenerate=autogenerate)
            conn.commit()
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m childguard.store.migrate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="autogenerate a new revision from the table models")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--empty", action="store_true", help="no autogenerate (data migrations)")
    up = sub.add_parser("upgrade", help="upgrade a database URL to head")
    up.add_argument("url")
    args = parser.parse_args(argv)
    if args.cmd == "revision":
        revision(args.message, autogenerate=not args.empty)
    else:
        from childguard.store.db import make_engine

        engine = make_engine(args.url)
        upgrade(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
