"""Email fixtures: a local SendGrid-compatible server and queued emails.

The stores (a SQLite file and a PostgreSQL database, migrated) come from tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.senders import SendGridSender
from tests.email.support import T0, QueueEmails, add_lead
from tests.fake_sendgrid import FakeSendGrid


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
