"""Enqueueing: rendered once, stored once, suppressed addresses recorded and never queued."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.tokens import email_token, read_email_token
from tasks.store.models import (
    EmailStatus,
    OutboxEmail,
    Run,
    RunKind,
    Suppression,
    SuppressionReason,
)
from tests.email.support import T0, add_lead


def _email(lead_id: int, key: str | None = None, **context: object) -> QueuedEmail:
    return QueuedEmail(key or f"decision:{lead_id}", lead_id, "welcome", dict(context), T0)


def test_enqueue_twice_inserts_once(session: Session, config: NurtureConfig) -> None:
    leads = [add_lead(session) for _ in range(3)]
    emails = [_email(lead.id) for lead in leads]
    first = enqueue_emails(session, config, emails, run_id=None, as_of=T0)
    again = enqueue_emails(session, config, emails, run_id=None, as_of=T0)
    session.commit()
    rows = session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert again == []
    assert first == [r.id for r in rows] and len(rows) == 3
    row = rows[0]
    assert (row.status, row.attempts, row.created_at, row.due_at) == (EmailStatus.QUEUED, 0, T0, T0)
    assert row.to_email == leads[0].email and row.subject == "Welcome, Pat"
    assert "I'm Ava Stone" in row.body_text  # the owner, from the same query as the lead


def test_a_lead_without_an_address_gets_no_row(session: Session, config: NurtureConfig) -> None:
    nobody = add_lead(session, email=None)
    assert enqueue_emails(session, config, [_email(nobody.id)], run_id=None, as_of=T0) == []
    assert session.scalars(select(OutboxEmail)).all() == []


def test_a_suppressed_address_is_recorded_not_queued(
    session: Session, config: NurtureConfig
) -> None:
    gone, here = add_lead(session), add_lead(session)
    session.add(
        Suppression(email_key=gone.email_key, reason=SuppressionReason.BOUNCED, created_at=T0)
    )
    ids = enqueue_emails(session, config, [_email(gone.id), _email(here.id)], run_id=None, as_of=T0)
    statuses = {r.lead_id: r.status for r in session.scalars(select(OutboxEmail))}
    assert len(ids) == 2
    assert statuses == {gone.id: EmailStatus.SUPPRESSED, here.id: EmailStatus.QUEUED}


def test_lead_fields_are_data_not_template_source(session: Session, config: NurtureConfig) -> None:
    lead = add_lead(
        session,
        first_name="<script>alert(1)</script>{{ 7 * 7 }}",
        company="{% for x in range(3) %}X{% endfor %}",
    )
    enqueue_emails(session, config, [_email(lead.id)], run_id=None, as_of=T0)
    row = session.scalars(select(OutboxEmail)).one()

    assert row.subject == "Welcome, <script>alert(1)</script>{{ 7 * 7 }}"
    assert "Hi <script>alert(1)</script>{{ 7 * 7 }}," in row.body_text
    assert "{% for x in range(3) %}X{% endfor %}'s questions" in row.body_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{ 7 * 7 }}" in row.body_html
    assert "<script>" not in row.body_html
    for part in (row.subject, row.body_text, row.body_html):
        assert "49" not in part and "XXX" not in part


def test_owner_falls_back_to_the_sender(session: Session, config: NurtureConfig) -> None:
    lead = add_lead(session, owner=False)
    enqueue_emails(session, config, [_email(lead.id)], run_id=None, as_of=T0)
    row = session.scalars(select(OutboxEmail)).one()
    assert f"I'm {config.sending.from_name}" in row.body_text


def test_caller_context_and_run_reach_the_row(session: Session, config: NurtureConfig) -> None:
    lead = add_lead(session)
    run = Run(kind=RunKind.DAILY, as_of=T0, started_at=T0, counts={})
    session.add(run)
    session.flush()
    context = {"whats_new": ["Dashboards <beta>"], "previous_reason": "bad_timing"}
    email = QueuedEmail("followup:1", lead.id, "reengagement", context, T0, opportunity_id=None)
    enqueue_emails(session, config, [email], run_id=run.id, as_of=T0)
    row = session.scalars(select(OutboxEmail)).one()
    assert (row.template, row.run_id) == ("reengagement", run.id)
    assert "(bad timing)" in row.body_text and "- Dashboards <beta>" in row.body_text
    assert "Dashboards &lt;beta&gt;" in row.body_html


def test_unsubscribe_links_are_per_email_and_unguessable(
    session: Session, config: NurtureConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lead = add_lead(session)
    enqueue_emails(
        session, config, [_email(lead.id, "a"), _email(lead.id, "b")], run_id=None, as_of=T0
    )
    rows = session.scalars(select(OutboxEmail).order_by(OutboxEmail.dedupe_key)).all()
    tokens = [re.search(r"/unsubscribe/([\w.]+)", r.body_text).group(1) for r in rows]  # type: ignore[union-attr]
    assert tokens == [email_token("a"), email_token("b")] and tokens[0] != tokens[1]
    assert all(re.fullmatch(r"[a-z2-7]+\.[0-9a-f]{32}", t) for t in tokens)  # 128-bit MAC
    assert [read_email_token(t) for t in tokens] == ["a", "b"]
    monkeypatch.setenv("NURTURE_SECRET", "production secret")
    assert email_token("a") != tokens[0]  # keyed: unknown without the secret


def test_one_query_loads_leads_and_owners(
    engine: Engine, session: Session, config: NurtureConfig
) -> None:
    leads = [add_lead(session) for _ in range(25)]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        enqueue_emails(session, config, [_email(x.id) for x in leads], run_id=None, as_of=T0)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "owners" in selects[0] and "suppressions" in selects[0]
