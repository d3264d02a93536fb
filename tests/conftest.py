"""Shared fixtures: every store test runs on a real SQLite file and a real PostgreSQL database.

PostgreSQL gets one fresh database per test session (migrated with Alembic, dropped at the end)
and is emptied between tests; SQLite gets a fresh copy of a migrated template file per test.
Set NURTURE_TEST_PG_URL to point at another server; NURTURE_TEST_SKIP_PG=1 skips PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid

# Before anything imports Prefect: a private Prefect home, and never a real server's API.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="nurture-prefect-")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from tasks.config.loader import ConfigError, NurtureConfig, load_config
from tasks.store.db import make_engine
from tasks.store.models import Run, RunKind
from tasks.store.schema import upgrade
from tests.builders import truncate_store

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AS_OF = dt.datetime(2026, 3, 2, 18, tzinfo=dt.UTC)


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    """A copy of the shipped config/ to break on purpose."""
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


def config_problems(directory: Path) -> list[str]:
    """The problems loading ``directory`` reports (it must fail), as text."""
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    return [str(p) for p in caught.value.problems]


@pytest.fixture(scope="session")
def config() -> NurtureConfig:
    return load_config(REPO / "config")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if os.environ.get("NURTURE_TEST_SKIP_PG"):
        pytest.skip("NURTURE_TEST_SKIP_PG is set")
    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Engine]:
    if request.param == "sqlite":
        path = tmp_path / "nurture.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
        truncate_store(url)
    monkeypatch.setenv("NURTURE_DATABASE_URL", url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session


@pytest.fixture
def run_id(session: Session) -> int:
    run = Run(kind=RunKind.DAILY, as_of=AS_OF, started_at=AS_OF, counts={})
    session.add(run)
    session.commit()
    return run.id
