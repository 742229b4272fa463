"""Alembic environment: one chain for every table on `childguard.store.db.Base`.

Run through `childguard.store.migrate` (which passes a live connection in
`config.attributes["connection"]`); a plain `alembic` call with `sqlalchemy.url` works too.
"""

from __future__ import annotations

from alembic import context

from childguard.store.db import Base, _import_table_modules, make_engine

_import_table_modules()
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode recreates the table instead
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to the migration env")
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
