"""Alembic environment: migrations run against the URL the caller configured (see tasks.store.schema)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from tasks.store.db import make_engine
from tasks.store.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    # Batch mode lets ALTERs work on SQLite, which cannot alter most things in place.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with make_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        run(conn)
        conn.commit()
