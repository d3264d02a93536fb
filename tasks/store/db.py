"""Engines and sessions for the store: a SQLite file by default, PostgreSQL when configured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///nurture.db"


def database_url() -> str:
    return os.environ.get("NURTURE_DATABASE_URL", DEFAULT_URL)


def _normalise_url(url: str) -> str:
    # "postgresql://" would pick psycopg2, which we do not ship; psycopg 3 is the driver.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (below), so pysqlite must not issue its own deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout makes a second writer wait
    # instead of failing at once; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # A deferred SQLite transaction that reads, then writes after another writer committed,
    # fails at once (its snapshot is stale). Taking the write lock up front makes two runs at
    # once queue behind each other (busy_timeout) instead of failing.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def to_json(value: Any) -> str:
    """Text for a JSON column, exactly as the engine serializes it."""
    # orjson (already installed with Prefect) is several times faster than the json module, and
    # a million-row import writes a JSON value or three per row.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str | None = None) -> Engine:
    url = _normalise_url(url or database_url())
    if url.startswith("sqlite"):
        engine = create_engine(url, json_serializer=to_json)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    # No server-side prepared statements: psycopg prepares a statement run five times, and
    # PostgreSQL may then plan it once for any parameters. Our statements carry their data in
    # parameters (``among``: thousands of ids or keys as one text value), which a custom plan
    # folds into a constant array; a generic one splits that text again for every row read.
    # An import's alias lookup went from 2 ms to 1.8 s per batch that way at a million rows.
    return create_engine(
        url,
        pool_pre_ping=True,
        json_serializer=to_json,
        connect_args={"prepare_threshold": None},
    )


@cache
def engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    return engine_for(_normalise_url(database_url()))


@contextmanager
def session_scope(*, dry_run: bool = False, engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on error or when ``dry_run``."""
    factory = sessionmaker(engine or get_engine(), expire_on_commit=False)
    with factory() as session:
        try:
            yield session
            if dry_run:
                session.rollback()
            else:
                session.commit()
        except BaseException:
            session.rollback()
            raise
