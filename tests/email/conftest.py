"""Email fixtures: a real SQLite file and a real PostgreSQL database, and a local SendGrid.

The schema comes from the models (``create_all``), so these tests follow the models even while a
migration is being written. PostgreSQL: one fresh ``nurture_test_<random>`` database per session,
emptied before each test and dropped at the end (NURTURE_TEST_PG_URL, NURTURE_TEST_SKIP_PG as in
the top-level conftest).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.senders import SendGridSender
from tasks.store.db import make_engine
from tasks.store.models import Base
from tests.email.support import T0, QueueEmails, add_lead
from tests.fake_sendgrid import FakeSendGrid

PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def email_pg_url() -> Iterator[str]:
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
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'nurture.db'}")
        Base.metadata.create_all(engine)
    else:
        engine = make_engine(request.getfixturevalue("email_pg_url"))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture
def sendgrid_server() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()


@pytest.fixture
def sendgrid_sender(sendgrid_server: FakeSendGrid) -> SendGridSender:
    return SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=2.0)


@pytest.fixture
def queue_emails(session: Session, config: NurtureConfig) -> QueueEmails:
    """``queue_emails(n, due_at=..., template=...)``: n new leads, one email each, committed."""

    def queue(n: int = 1, *, due_at: dt.datetime = T0, template: str = "welcome") -> list[int]:
        emails = [
            QueuedEmail(f"test:{lead.id}", lead.id, template, {}, due_at)
            for lead in (add_lead(session) for _ in range(n))
        ]
        ids = enqueue_emails(session, config, emails, run_id=None, as_of=T0)
        session.commit()
        assert len(ids) == n
        return ids

    return queue
