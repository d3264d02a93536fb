"""Inbound replies and one-click unsubscribes through the real app, on both stores."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from tasks.config.loader import NurtureConfig
from tasks.email.inbound import automatic_reason
from tasks.email.senders import OutboxOnlySender
from tasks.email.sending import send_due_emails
from tasks.email.tokens import email_token, read_email_token, reply_address
from tasks.email.webapp import ServeSettings, create_app
from tasks.store.models import (
    Activity,
    ActivityKind,
    CadenceEnrolment,
    EmailStatus,
    EnrolmentStatus,
    OutboxEmail,
    Suppression,
)
from tests.email.support import T0, QueueEmails

SECRET = "s3cret-inbound"


@pytest.fixture
def client(engine: Engine) -> TestClient:
    settings = ServeSettings(webhook_key=None, inbound_secret=SECRET)
    return TestClient(create_app(settings, engine=engine, clock=lambda: T0.timestamp()))


def sent(session: Session, email_id: int, message_id: str | None = None) -> SimpleNamespace:
    """Mark the email sent with its lead in a cadence; its fields, read once (no lazy loads
    later: on SQLite a reader's open transaction would hold the lock the app needs)."""
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == email_id)
        .values(status=EmailStatus.SENT, sent_at=T0, message_id=message_id)
    )
    email = session.get(OutboxEmail, email_id)
    assert email is not None
    session.add(CadenceEnrolment(lead_id=email.lead_id, cadence="new_lead_nurture", enrolled_at=T0,
                                 next_step=1, next_due_at=T0))  # fmt: skip
    snapshot = SimpleNamespace(id=email.id, lead_id=email.lead_id, dedupe_key=email.dedupe_key,
                               to_email=email.to_email)  # fmt: skip
    session.commit()
    return snapshot


def form(to: str, sender: str, headers: str = "", **more: str) -> dict[str, str]:
    return {"to": to, "from": sender, "subject": "Re: hello", "text": "Sounds good, call me.",
            "headers": headers, "envelope": json.dumps({"to": [to], "from": sender}), **more}  # fmt: skip


def activities(session: Session) -> list[tuple[ActivityKind, int, int | None]]:
    session.expire_all()
    found = [
        (a.kind, a.lead_id, a.email_id)
        for a in session.scalars(select(Activity).order_by(Activity.id))
    ]
    session.commit()  # SQLite: a reader's open transaction would hold the lock the app needs
    return found


def test_tokens_name_their_email_and_cannot_be_forged() -> None:
    token = email_token("cadence:12:3")
    assert read_email_token(token) == "cadence:12:3"
    assert read_email_token(token.upper()) == "cadence:12:3"  # mail systems may fold case
    named, mac = token.split(".")
    assert read_email_token(f"{named}.{'0' * 32}") is None
    assert read_email_token(email_token("cadence:12:4").split(".")[0] + "." + mac) is None
    assert read_email_token("garbage") is None and read_email_token("!!.x") is None
    assert (
        reply_address("replies@nurture.example", "k")
        == f"replies+{email_token('k')}@nurture.example"
    )


def test_a_reply_is_threaded_by_its_token_and_ends_the_cadence(
    client: TestClient, session: Session, queue_emails: QueueEmails
) -> None:
    [email_id] = queue_emails(1)
    email = sent(session, email_id)
    to = reply_address("replies@nurture.example", email.dedupe_key) or ""
    headers = "Message-ID: <abc@mail.example>\r\nFrom: Someone <someone@elsewhere.example>\r\n"
    answer = client.post(
        f"/sendgrid/inbound/{SECRET}", data=form(to, "someone@elsewhere.example", headers)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["threaded_by"] == "token"
    assert activities(session) == [(ActivityKind.REPLY, email.lead_id, email_id)]
    enrolment = session.scalar(select(CadenceEnrolment))
    assert enrolment is not None and (enrolment.status, enrolment.end_reason) == (
        EnrolmentStatus.EXITED,
        "replied",
    )
    session.commit()
    # SendGrid posts the same message again: recorded once.
    again = client.post(
        f"/sendgrid/inbound/{SECRET}", data=form(to, "someone@elsewhere.example", headers)
    )
    assert again.json()["recorded"] == "False" and len(activities(session)) == 1


def test_in_reply_to_then_the_sender_thread_a_reply_without_a_token(
    client: TestClient, session: Session, queue_emails: QueueEmails
) -> None:
    [first, second] = queue_emails(2)
    a = sent(session, first, message_id="SGmsgA")
    b = sent(session, second)
    by_header = client.post(
        f"/sendgrid/inbound/{SECRET}",
        data=form("replies@nurture.example", "x@y.example",
                  "Message-ID: <1@y>\r\nIn-Reply-To: <SGmsgA.filter1@ismtpd.sendgrid.net>\r\n"),
    )  # fmt: skip
    assert by_header.json()["threaded_by"] == "in-reply-to"
    by_sender = client.post(
        f"/sendgrid/inbound/{SECRET}",
        data=form("replies@nurture.example", b.to_email.upper(), "Message-ID: <2@y>\r\n"),
    )
    assert by_sender.json()["threaded_by"] == "sender"
    assert activities(session) == [
        (ActivityKind.REPLY, a.lead_id, first),
        (ActivityKind.REPLY, b.lead_id, second),
    ]
    stranger = client.post(
        f"/sendgrid/inbound/{SECRET}", data=form("replies@nurture.example", "who@nowhere.example")
    )
    assert stranger.status_code == 200 and stranger.json()["lead_id"] is None


@pytest.mark.parametrize(
    ("headers", "envelope_from", "why"),
    [
        ("Auto-Submitted: auto-replied\r\n", "a@b.example", "Auto-Submitted: auto-replied"),
        ("X-Autoreply: yes\r\n", "a@b.example", "x-autoreply: yes"),
        ("Precedence: bulk\r\n", "a@b.example", "Precedence: bulk"),
        ("", "", "empty envelope sender"),
        (
            "Content-Type: multipart/report; report-type=delivery-status\r\n",
            "a@b.example",
            "delivery report",
        ),
    ],
)
def test_automatic_messages_are_recorded_but_are_not_replies(
    client: TestClient,
    session: Session,
    queue_emails: QueueEmails,
    headers: str,
    envelope_from: str,
    why: str,
) -> None:
    [email_id] = queue_emails(1)
    email = sent(session, email_id)
    to = reply_address("replies@nurture.example", email.dedupe_key) or ""
    data = form(to, "a@b.example", headers + "Message-ID: <auto@b>\r\n")
    data["envelope"] = json.dumps({"to": [to], "from": envelope_from})
    answer = client.post(f"/sendgrid/inbound/{SECRET}", data=data)
    assert answer.json()["automatic_because"] == why
    assert activities(session) == [(ActivityKind.AUTO_REPLY, email.lead_id, email_id)]
    enrolment = session.scalar(select(CadenceEnrolment))
    assert enrolment is not None and enrolment.status is EnrolmentStatus.ACTIVE


def test_people_are_not_automatic() -> None:
    assert (
        automatic_reason({"Auto-Submitted": "no", "From": "ana@x.example"}, "ana@x.example") is None
    )
    assert automatic_reason({"From": "MAILER-DAEMON@x.example"}, None) == "sent by MAILER-DAEMON"


def test_inbound_needs_its_secret_and_a_form(client: TestClient, session: Session) -> None:
    assert client.post("/sendgrid/inbound/wrong", data=form("a@b", "c@d")).status_code == 403
    bad = client.post(
        f"/sendgrid/inbound/{SECRET}", content=b"{}", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 415
    broken = client.post(f"/sendgrid/inbound/{SECRET}", content=b"--x\r\nnonsense",
                         headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert broken.status_code == 400 and "not an Inbound Parse post" in broken.text
    assert activities(session) == []


def test_one_click_unsubscribe_suppresses_at_once_and_sending_honours_it(
    client: TestClient,
    session: Session,
    queue_emails: QueueEmails,
    config: NurtureConfig,
    engine: Engine,
) -> None:
    [email_id, later] = queue_emails(2)
    email = session.get(OutboxEmail, email_id)
    assert email is not None
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == later)
        .values(to_email=email.to_email, lead_id=email.lead_id)
    )
    session.commit()
    token = email_token(email.dedupe_key)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and 'method="post"' in page.text
    assert session.scalar(select(Suppression)) is None  # a link scanner's GET changes nothing
    session.commit()
    one_click = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    session.expire_all()
    suppression = session.scalar(select(Suppression))
    assert suppression is not None and (suppression.email_key, suppression.reason) == (
        email.to_email.casefold(),
        "unsubscribed",
    )
    session.commit()
    assert client.post(f"/unsubscribe/{token[:-1]}0").status_code == 404
    assert client.post(f"/unsubscribe/{email_token('nope')}").status_code == 404
    summary = send_due_emails(engine, OutboxOnlySender(), as_of=T0, config=config)
    session.expire_all()
    assert summary.suppressed == 2
    assert {e.status for e in session.scalars(select(OutboxEmail))} == {EmailStatus.SUPPRESSED}
