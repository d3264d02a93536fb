"""Schema migrations (Alembic), run from code: ``nurture db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tasks.store.db import get_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine | None = None, revision: str = "head") -> None:
    engine = engine or get_engine()
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine | None = None) -> str | None:
    engine = engine or get_engine()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


class SchemaOutOfDate(RuntimeError):
    pass


def ensure_schema(engine: Engine | None = None) -> None:
    """Bring the embedded SQLite store to head (zero set-up); refuse an out-of-date other one.

    A shared PostgreSQL store is migrated by ops on purpose (`nurture db upgrade`), never as a
    side effect of whichever flow run happens to start first.
    """
    engine = engine or get_engine()
    current = current_revision(engine)
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the store at {engine.url.render_as_string(hide_password=True)} is at schema "
        f"revision {current or 'none'}, expected {head_revision()}: run `nurture db upgrade`"
    )
