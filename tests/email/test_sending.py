"""The send state machine on a real store, with the real sendgrid client against a local server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.senders import OutboxOnlySender, OutgoingMessage, SendGridSender, SendResult
from tasks.email.sending import MAX_ATTEMPTS, SendSummary, send_due_emails
from tasks.email.tokens import email_token, reply_address
from tasks.store.models import EmailStatus, Lead, OutboxEmail, Suppression, SuppressionReason
from tests.email.support import T0, QueueEmails
from tests.fake_sendgrid import FakeSendGrid

NOW = T0 + dt.timedelta(hours=1)
SENT, QUEUED, FAILED = EmailStatus.SENT, EmailStatus.QUEUED, EmailStatus.FAILED


def rows(engine: Engine) -> list[OutboxEmail]:
    with Session(engine) as s:
        return list(s.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def statuses(engine: Engine) -> dict[str, int]:
    return dict(Counter(str(r.status) for r in rows(engine)))


def sent_ids(server: FakeSendGrid) -> list[int]:
    return [int(r.body["custom_args"]["nurture_email_id"]) for r in server.accepted]


def send(engine: Engine, sender: Any, config: NurtureConfig, **kw: Any) -> SendSummary:
    return send_due_emails(engine, sender, as_of=kw.pop("as_of", NOW), config=config, **kw)


def set_rows(engine: Engine, ids: list[int], **values: Any) -> None:
    with Session(engine) as s, s.begin():
        s.execute(update(OutboxEmail).where(OutboxEmail.id.in_(ids)).values(**values))


def test_outbox_only_records_in_batches_and_sends_nothing(
    engine: Engine, config: NurtureConfig, queue_emails: QueueEmails
) -> None:
    ids = queue_emails(5)
    statements: list[str] = []

    def log(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", log)
    try:
        summary = send(engine, OutboxOnlySender(), config, batch_size=2)
    finally:
        event.remove(engine, "before_cursor_execute", log)
    assert (summary.recorded, summary.sent, summary.queued) == (5, 0, 0)
    # One UPDATE per batch (2 + 2 + 1, then one that finds nothing), never one per row.
    assert sum("sent_at" in s and s.startswith("UPDATE") for s in statements) == 4
    assert [(r.id, r.status, r.sent_at, r.attempts) for r in rows(engine)] == [
        (i, EmailStatus.RECORDED, NOW, 0) for i in ids
    ]
    assert send(engine, OutboxOnlySender(), config).recorded == 0


def test_sendgrid_sends_each_email_once(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    ids = queue_emails(3)
    first = send(engine, sendgrid_sender, config, batch_size=2)
    again = send(engine, sendgrid_sender, config)

    assert (first.sent, again.sent) == (3, 0)
    assert sent_ids(sendgrid_server) == ids
    outbox = rows(engine)
    assert [(r.status, r.sent_at, r.attempts) for r in outbox] == [(SENT, NOW, 1)] * 3
    assert [r.message_id for r in outbox] == sendgrid_server.message_ids
    body = sendgrid_server.accepted[0].body
    token = email_token(outbox[0].dedupe_key)
    assert body["custom_args"] == {
        "nurture_email_id": str(ids[0]),
        "dedupe_key": outbox[0].dedupe_key,
    }
    assert body["headers"] == {
        "List-Unsubscribe": f"<https://nurture.example/unsubscribe/{token}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["subject"] == outbox[0].subject
    assert body["personalizations"] == [{"to": [{"email": outbox[0].to_email}]}]
    # Each email's reply-to names it: a reply is threaded by its token (see test_inbound.py).
    assert body["reply_to"] == {
        "email": reply_address(config.sending.reply_to, outbox[0].dedupe_key)
    }
    assert body["reply_to"]["email"].startswith("replies+")


def test_suppressed_after_enqueue_is_never_sent(
    engine: Engine,
    session: Session,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    gone, kept = queue_emails(2)
    address = session.get(OutboxEmail, gone)
    assert address is not None
    session.add(
        Suppression(
            email_key=address.to_email.casefold(),
            reason=SuppressionReason.UNSUBSCRIBED,
            created_at=NOW,
        )
    )
    session.commit()
    summary = send(engine, sendgrid_sender, config)
    assert (summary.suppressed, summary.sent) == (1, 1)
    assert sent_ids(sendgrid_server) == [kept]
    assert [r.status for r in rows(engine)] == [EmailStatus.SUPPRESSED, SENT]


def test_the_address_an_email_was_written_for_is_checked_too(
    engine: Engine,
    session: Session,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    lead_ids = session.scalars(
        select(OutboxEmail.lead_id).where(OutboxEmail.id.in_(queue_emails(2))).order_by("id")
    ).all()
    # The first lead moved to a new address after enqueue, and the old one bounced; the second
    # lead's current address was unsubscribed.
    moved, stays = (session.get(Lead, i) for i in lead_ids)
    assert moved is not None and stays is not None
    session.add_all(
        [
            Suppression(email_key=moved.email_key, reason=SuppressionReason.BOUNCED, created_at=NOW),
            Suppression(email_key=stays.email_key, reason=SuppressionReason.UNSUBSCRIBED, created_at=NOW),
        ]
    )  # fmt: skip
    moved.email, moved.email_key = "pat@new.example", "pat@new.example"
    session.commit()
    assert send(engine, sendgrid_sender, config).suppressed == 2
    assert sendgrid_server.received == []


def test_a_rejected_email_fails_once_and_is_not_retried(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    bad, good = queue_emails(2)
    sendgrid_server.answer_next(400)
    first = send(engine, sendgrid_sender, config)
    second = send(engine, sendgrid_sender, config, as_of=NOW + dt.timedelta(hours=1))

    assert (first.failed, first.sent, second.failed, second.sent) == (1, 1, 0, 0)
    assert len(sendgrid_server.received) == 2 and sent_ids(sendgrid_server) == [good]
    failed = rows(engine)[0]
    assert (failed.id, failed.status, failed.attempts, failed.sent_at) == (bad, FAILED, 1, None)
    assert failed.error is not None and failed.error.startswith("SendGrid 400: The subject is")


@pytest.mark.parametrize("status", [500, 429])
def test_server_errors_and_rate_limits_are_retried_then_sent(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
    status: int,
) -> None:
    [email] = queue_emails(1)
    sendgrid_server.answer_next(status)
    first = send(engine, sendgrid_sender, config)
    [row] = rows(engine)
    assert (first.queued, row.status, row.attempts) == (1, QUEUED, 1)
    assert row.error is not None and row.error.startswith(f"SendGrid {status}:")

    second = send(engine, sendgrid_sender, config, as_of=NOW + dt.timedelta(hours=1))
    [row] = rows(engine)
    assert (second.sent, row.status, row.attempts, row.error) == (1, SENT, 2, None)
    assert sent_ids(sendgrid_server) == [email] and len(sendgrid_server.received) == 2


def test_a_retryable_failure_is_final_after_the_last_attempt(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    ids = queue_emails(1)
    set_rows(engine, ids, attempts=MAX_ATTEMPTS - 1)
    sendgrid_server.answer_next(500)
    assert send(engine, sendgrid_sender, config).failed == 1
    [row] = rows(engine)
    assert (row.status, row.attempts) == (FAILED, MAX_ATTEMPTS)


def test_a_timeout_after_the_request_went_out_is_never_resent_blindly(
    engine: Engine, config: NurtureConfig, queue_emails: QueueEmails, sendgrid_server: FakeSendGrid
) -> None:
    queue_emails(1)
    sendgrid_server.hang_next(seconds=5)
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=0.2)
    summary = send(engine, sender, config)
    [row] = rows(engine)
    assert (summary.needs_reconcile, row.status, row.attempts) == (1, EmailStatus.SENDING, 1)
    assert row.error == "no answer from SendGrid within 0.2 s (the request was sent)"
    again = send(engine, sender, config)  # a rerun leaves it for the webhook to settle
    assert len(sendgrid_server.received) == 1 and again.needs_reconcile == 1


def test_an_outage_stops_the_run_without_burning_attempts(
    engine: Engine, config: NurtureConfig, queue_emails: QueueEmails, sendgrid_server: FakeSendGrid
) -> None:
    queue_emails(5)
    sendgrid_server.hang_next(seconds=5, times=5)
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=0.1)
    summary = send(engine, sender, config)
    assert summary.stopped is not None and summary.stopped.startswith("3 retryable failures")
    assert len(sendgrid_server.received) == 3  # not 5: nobody waits out every timeout
    # The three that went out unanswered may have been taken: they wait for the webhook.
    assert (summary.needs_reconcile, summary.queued) == (3, 2)
    assert [(r.status, r.attempts) for r in rows(engine)] == [(EmailStatus.SENDING, 1)] * 3 + [
        (QUEUED, 0)
    ] * 2


@pytest.mark.parametrize("status", [401, 403])
def test_an_account_error_stops_the_run_and_fails_nobody(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
    status: int,
) -> None:
    queue_emails(3)
    sendgrid_server.answer_next(status)
    summary = send(engine, sendgrid_sender, config)
    assert summary.stopped is not None and f"SendGrid {status}" in summary.stopped
    assert (summary.failed, summary.queued, len(sendgrid_server.received)) == (0, 3, 1)
    assert [(r.status, r.attempts) for r in rows(engine)] == [(QUEUED, 0)] * 3
    assert rows(engine)[0].error is not None  # the reason is kept on the row that met it


def test_a_long_rate_limit_stops_the_run(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    queue_emails(3)
    sendgrid_server.answer_next(429)
    sendgrid_server.rate_limit_reset_in = 600
    summary = send(engine, sendgrid_sender, config)
    assert summary.stopped is not None and summary.stopped.startswith("rate limited for")
    assert len(sendgrid_server.received) == 1
    assert [(r.status, r.attempts) for r in rows(engine)] == [(QUEUED, 1), (QUEUED, 0), (QUEUED, 0)]


def test_a_row_left_in_sending_is_never_resent(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    crashed, waiting = queue_emails(2)
    set_rows(engine, [crashed], status=EmailStatus.SENDING, attempts=1)  # a crash mid-send
    summary = send(engine, sendgrid_sender, config)
    again = send(engine, sendgrid_sender, config, as_of=NOW + dt.timedelta(days=1))
    assert (summary.needs_reconcile, summary.sent, again.needs_reconcile) == (1, 1, 1)
    assert sent_ids(sendgrid_server) == [waiting]
    assert [(r.status, r.attempts) for r in rows(engine)] == [(EmailStatus.SENDING, 1), (SENT, 1)]


class _Crash(BaseException):
    pass


class CrashingSender:
    """The real sender, but the process dies during the ``n``-th call."""

    records_only = False

    def __init__(self, inner: SendGridSender, n: int) -> None:
        self.inner, self.n, self.calls = inner, n, 0

    def send(self, message: OutgoingMessage) -> SendResult:
        self.calls += 1
        if self.calls == self.n:
            self.inner.send(message)  # it went out, and then the process died
            raise _Crash
        return self.inner.send(message)


def test_a_crash_mid_batch_leaves_only_the_unknown_row_in_sending(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    ids = queue_emails(4)
    with pytest.raises(_Crash):
        send(engine, CrashingSender(sendgrid_sender, n=2), config)
    assert [(r.status, r.attempts) for r in rows(engine)] == [
        (SENT, 1),
        (EmailStatus.SENDING, 1),  # did it leave? only the webhook knows: never resent blindly
        (QUEUED, 0),
        (QUEUED, 0),
    ]
    after = send(engine, sendgrid_sender, config)
    assert (after.needs_reconcile, after.sent) == (1, 2)
    assert sent_ids(sendgrid_server) == ids  # each exactly once


def test_emails_past_their_moment_are_skipped(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    [stale] = queue_emails(1, due_at=NOW - dt.timedelta(days=3))
    [recent] = queue_emails(1, due_at=NOW - dt.timedelta(days=1))
    [future] = queue_emails(1, due_at=NOW + dt.timedelta(hours=1))
    summary = send(engine, sendgrid_sender, config)
    assert (summary.skipped_late, summary.sent) == (1, 1)
    assert sent_ids(sendgrid_server) == [recent]
    by_id = {r.id: r.status for r in rows(engine)}
    assert by_id == {stale: EmailStatus.SKIPPED_LATE, recent: SENT, future: QUEUED}


def test_dry_run_sends_and_writes_nothing(
    engine: Engine,
    session: Session,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    ids = queue_emails(12)
    queue_emails(1, due_at=NOW - dt.timedelta(days=3))  # late: skipped, not sent
    [in_flight] = queue_emails(1)
    set_rows(engine, [in_flight], status=EmailStatus.SENDING, attempts=1)
    address = session.get(OutboxEmail, ids[0])
    assert address is not None
    session.add(
        Suppression(
            email_key=address.to_email.casefold(), reason=SuppressionReason.MANUAL, created_at=NOW
        )
    )
    session.commit()
    before = [(r.id, r.status, r.attempts, r.sent_at) for r in rows(engine)]

    summary = send(engine, sendgrid_sender, config, dry_run=True)
    recorded = send(engine, OutboxOnlySender(), config, dry_run=True)

    assert summary == SendSummary(
        sent=11,
        suppressed=1,
        skipped_late=1,
        needs_reconcile=1,
        dry_run=True,
        would_send_ids=ids[1:11],  # in send order; the suppressed and the late ones are not
    )
    assert (recorded.recorded, recorded.sent) == (11, 0)
    assert sendgrid_server.received == []
    assert [(r.id, r.status, r.attempts, r.sent_at) for r in rows(engine)] == before


def test_two_runs_at_once_send_each_email_once(
    engine: Engine,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    ids = queue_emails(30)
    summaries: list[SendSummary] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            summaries.append(send(engine, sendgrid_sender, config, batch_size=4))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(sent_ids(sendgrid_server)) == ids
    assert sum(s.sent for s in summaries) == 30
    assert statuses(engine) == {"sent": 30}


def test_a_dynamic_template_is_sent_as_sendgrid_renders_it(
    engine: Engine,
    session: Session,
    config: NurtureConfig,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
    tmp_path: Path,
) -> None:
    from tasks.email.outbox import QueuedEmail, enqueue_emails
    from tasks.email.templates import parse_template
    from tests.email.support import add_lead

    source = tmp_path / "dyn.txt"
    source.write_text("subject: Hi {{ lead.first_name }}\nsendgrid_template: d-" + "a1" * 16
                      + "\n---\nHello {{ lead.first_name }}\n")  # fmt: skip
    templates = {**config.templates, "dyn": parse_template(source)}
    templated = dataclasses.replace(config, templates=templates)
    lead = add_lead(session, first_name="<b>{{ Bo }}</b>")
    enqueue_emails(session, templated, [QueuedEmail("dyn:1", lead.id, "dyn", {"reason": "x"}, T0)],
                   run_id=None, as_of=T0)  # fmt: skip
    session.commit()
    summary = send_due_emails(engine, sendgrid_sender, as_of=NOW, config=templated)
    assert summary.sent == 1
    body = sendgrid_server.accepted[0].body
    assert body["template_id"] == "d-" + "a1" * 16
    assert "content" not in body and "subject" not in body
    data = body["personalizations"][0]["dynamic_template_data"]
    # Lead fields are data: SendGrid's Handlebars escapes them; nothing here evaluates them.
    assert data["lead"]["first_name"] == "<b>{{ Bo }}</b>" and data["reason"] == "x"
    assert data["subject"] == "Hi <b>{{ Bo }}</b>" and data["unsubscribe_url"].startswith(
        "https://"
    )


def test_a_template_header_must_be_known_and_well_formed(tmp_path: Path) -> None:
    from tasks.email.templates import TemplateError, parse_template

    bad = tmp_path / "bad.txt"
    bad.write_text("subject: Hi\nsendgrid_template: 1234\n---\nbody\n")
    with pytest.raises(TemplateError, match="line 2: sendgrid_template: expected d-"):
        parse_template(bad)
    bad.write_text("subject: Hi\nfrom: me\n---\nbody\n")
    with pytest.raises(TemplateError, match="line 2: unknown header 'from'"):
        parse_template(bad)
