"""Real stores for the ingest tests: a SQLite file and a fresh PostgreSQL database.

Self-contained (the schema comes from ``Base.metadata.create_all``, not the migrations) so the
importers can be tested on their own. PostgreSQL gets one database for the whole test session,
emptied before each test and dropped at the end. Set NURTURE_TEST_PG_URL to use another server;
NURTURE_TEST_SKIP_PG=1 skips the PostgreSQL half.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from tasks.store.db import make_engine
from tasks.store.models import Base, Run, RunKind

PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AS_OF = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def ingest_pg_url() -> Iterator[str]:
    if os.environ.get("NURTURE_TEST_SKIP_PG"):
        pytest.skip("NURTURE_TEST_SKIP_PG is set")
    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ingest_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'ingest.db'}")
        Base.metadata.create_all(engine)
    else:
        engine = make_engine(request.getfixturevalue("ingest_pg_url"))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture
def session(ingest_engine: Engine) -> Iterator[Session]:
    with sessionmaker(ingest_engine, expire_on_commit=False)() as session:
        yield session


@pytest.fixture
def run_id(session: Session) -> int:
    run = Run(kind=RunKind.INGEST, as_of=AS_OF, started_at=AS_OF, counts={})
    session.add(run)
    session.commit()
    return run.id
