"""The outbox and the send path, with the real sendgrid client against a local server."""

import datetime as dt

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.senders import OutboxOnlySender, SendGridSender
from tasks.email.sending import send_due_emails
from tasks.store.models import EmailStatus, OutboxEmail, Suppression, SuppressionReason
from tests.builders import days, lead
from tests.fake_sendgrid import FakeSendGrid

T0 = dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC)


def _queue(session: Session, config: NurtureConfig, n: int = 1, **lead_fields: object) -> list[int]:
    ids = []
    for i in range(n):
        person = lead(session, T0 - days(1), **lead_fields)  # type: ignore[arg-type]
        ids += enqueue_emails(
            session, config,
            [QueuedEmail(f"test:{person.id}:{i}", person.id, "welcome", {}, T0)],
            run_id=None, as_of=T0,
        )  # fmt: skip
    session.commit()
    return ids


def _statuses(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        rows = s.execute(select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status))
        return {str(status): n for status, n in rows}


def test_enqueue_is_exactly_once_and_lead_fields_stay_inert(
    session: Session, config: NurtureConfig
) -> None:
    person = lead(session, T0, first_name="<b>{{ 7 * 7 }}</b>")
    email = QueuedEmail("test:inert", person.id, "welcome", {}, T0)
    first = enqueue_emails(session, config, [email], run_id=None, as_of=T0)
    again = enqueue_emails(session, config, [email], run_id=None, as_of=T0)
    row = session.scalars(select(OutboxEmail)).one()
    assert (len(first), again) == (1, [])
    assert "Hi <b>{{ 7 * 7 }}</b>," in row.body_text  # data, not template source: no 49
    assert "&lt;b&gt;{{ 7 * 7 }}&lt;/b&gt;" in row.body_html
    assert "49" not in row.body_text
    assert "Unsubscribe: https://nurture.example/unsubscribe/" in row.body_text


def test_outbox_only_records_and_sends_nothing(
    engine: Engine, session: Session, config: NurtureConfig
) -> None:
    _queue(session, config, 3)
    summary = send_due_emails(engine, OutboxOnlySender(), as_of=T0 + days(0.1), config=config)
    assert summary.by_status == {"recorded": 3}
    assert _statuses(engine) == {"recorded": 3}


def test_sendgrid_sends_once_with_our_id_and_one_click_unsubscribe(
    engine: Engine, session: Session, config: NurtureConfig, sendgrid_server: FakeSendGrid
) -> None:
    ids = _queue(session, config, 2)
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=1)
    send_due_emails(engine, sender, as_of=T0 + days(0.1), config=config)
    again = send_due_emails(engine, sender, as_of=T0 + days(0.1), config=config)

    assert len(sendgrid_server.accepted) == 2 and again.by_status == {}
    body = sendgrid_server.accepted[0]
    assert body["custom_args"]["nurture_email_id"] == str(ids[0])
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["List-Unsubscribe"].startswith("<https://nurture.example/unsubscribe/")
    with Session(engine) as s:
        rows = s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).all()
        assert [r.status for r in rows] == [EmailStatus.SENT, EmailStatus.SENT]
        assert all(r.message_id for r in rows)


def test_errors_retryable_and_not(
    engine: Engine, session: Session, config: NurtureConfig, sendgrid_server: FakeSendGrid
) -> None:
    _queue(session, config, 3)
    sendgrid_server.script.extend([400, 500, 429])
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=1)
    first = send_due_emails(engine, sender, as_of=T0 + days(0.1), config=config)
    assert first.by_status == {"failed": 1, "retry_later": 2}
    with Session(engine) as s:
        failed = s.scalars(
            select(OutboxEmail).where(OutboxEmail.status == EmailStatus.FAILED)
        ).one()
        assert failed.error == "HTTP 400: scripted 400"
    second = send_due_emails(engine, sender, as_of=T0 + days(0.2), config=config)
    assert second.by_status == {"sent": 2}
    assert len(sendgrid_server.accepted) == 2


def test_a_hanging_api_times_out_and_the_email_waits(
    engine: Engine, session: Session, config: NurtureConfig, sendgrid_server: FakeSendGrid
) -> None:
    _queue(session, config, 1)
    sendgrid_server.script.append("hang")
    sendgrid_server.hang_seconds = 1.5
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=0.3)
    summary = send_due_emails(engine, sender, as_of=T0 + days(0.1), config=config)
    assert summary.by_status == {"retry_later": 1}
    assert _statuses(engine) == {"queued": 1}


def test_suppressed_at_send_time_late_and_crashed_rows_are_not_sent(
    engine: Engine, session: Session, config: NurtureConfig, sendgrid_server: FakeSendGrid
) -> None:
    ids = _queue(session, config, 3)
    victim = session.get(OutboxEmail, ids[0])
    session.add(Suppression(email_key=victim.to_email.casefold(), reason=SuppressionReason.UNSUBSCRIBED,
                            created_at=T0))  # fmt: skip
    session.get(OutboxEmail, ids[1]).status = EmailStatus.SENDING  # a crash mid-send
    session.commit()
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=1)
    late = send_due_emails(engine, sender, as_of=T0 + days(5), config=config)
    assert late.by_status == {"suppressed": 1, "skipped_late": 1}
    assert late.needs_reconcile == 1
    assert sendgrid_server.accepted == []
    assert _statuses(engine) == {"suppressed": 1, "sending": 1, "skipped_late": 1}


def test_dry_run_sends_and_writes_nothing(
    engine: Engine, session: Session, config: NurtureConfig, sendgrid_server: FakeSendGrid
) -> None:
    _queue(session, config, 2)
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host)
    summary = send_due_emails(engine, sender, as_of=T0 + days(0.1), config=config, dry_run=True)
    assert summary.would_send == 2
    assert sendgrid_server.accepted == [] and _statuses(engine) == {"queued": 2}
