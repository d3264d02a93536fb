"""The Event Webhook through the real app: signatures (SendGrid's own test vector and our key
pair), bad input refused with nothing written, events stored once and applied in any order."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from tasks.email.events import apply_events, events_from, load_event_file
from tasks.email.webapp import SIGNATURE_HEADER, TIMESTAMP_HEADER, ServeSettings, create_app
from tasks.store.models import Delivery, EmailEvent, EmailStatus, OutboxEmail, Suppression
from tests.email.support import T0, QueueEmails

NOW = 1_790_000_000  # the app's clock in these tests

# SendGrid's published test vector (sendgrid-python, test/unit/test_eventwebhook.py).
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+"
    "2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
)


class Signer:
    """A test key pair in SendGrid's formats: base64 DER public key, base64 DER signatures."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, stamp: int = NOW) -> dict[str, str]:
        signature = self.private.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: str(stamp),
            "content-type": "application/json",
        }


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def client(engine: Engine, signer: Signer) -> TestClient:
    settings = ServeSettings(
        webhook_key=signer.public, inbound_secret="s3cret", max_event_bytes=200_000
    )
    return TestClient(create_app(settings, engine=engine, clock=lambda: NOW))


def event(
    email_id: int | None, name: str, n: int, at: int = NOW - 60, **extra: Any
) -> dict[str, Any]:
    e: dict[str, Any] = {"sg_event_id": f"ev-{name}-{n}", "event": name, "email": f"person{n}@x.example",
                         "timestamp": at, "sg_message_id": f"msg{n}.filter0001"}  # fmt: skip
    if email_id is not None:
        e["nurture_email_id"] = str(email_id)
    return e | extra


def post(client: TestClient, signer: Signer, events: list[dict[str, Any]]) -> Any:
    body = json.dumps(events).encode()
    return client.post("/sendgrid/events", content=body, headers=signer.headers(body))


def count(session: Session, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_sendgrids_published_test_vector_verifies(engine: Engine, session: Session) -> None:
    settings = ServeSettings(webhook_key=SG_PUBLIC_KEY, inbound_secret=None)
    app = TestClient(create_app(settings, engine=engine, clock=lambda: int(SG_TIMESTAMP) + 5))
    headers = {SIGNATURE_HEADER: SG_SIGNATURE, TIMESTAMP_HEADER: SG_TIMESTAMP,
               "content-type": "application/json"}  # fmt: skip
    answer = app.post("/sendgrid/events", content=SG_PAYLOAD.encode(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 1 and answer.json()["suppressed"] == 1
    assert session.scalar(select(Suppression.reason)) == "bounced"
    # One byte changed (the trailing CRLF gone): the signature no longer holds.
    tampered = app.post("/sendgrid/events", content=SG_PAYLOAD.strip().encode(), headers=headers)
    assert tampered.status_code == 403 and count(session, EmailEvent) == 1


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (
            lambda body, h: (body, {**h, SIGNATURE_HEADER: base64.b64encode(b"nonsense").decode()}),
            403,
        ),
        (lambda body, h: (body, {k: v for k, v in h.items() if k != SIGNATURE_HEADER}), 401),
        (lambda body, h: (body, {**h, "content-type": "text/plain"}), 415),
        (lambda body, h: (body + b" ", h), 403),  # signed bytes changed
    ],
    ids=["bad-signature", "no-signature", "content-type", "body-changed"],
)
def test_requests_that_are_not_sendgrids_write_nothing(
    client: TestClient, signer: Signer, session: Session,
    mutate: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]], status: int,
) -> None:  # fmt: skip
    body = json.dumps([event(None, "open", 1)]).encode()
    sent_body, headers = mutate(body, signer.headers(body))
    answer = client.post("/sendgrid/events", content=sent_body, headers=headers)
    assert answer.status_code == status, answer.text
    assert count(session, EmailEvent) == 0


def test_stale_timestamps_malformed_json_unknown_events_and_oversize_are_4xx(
    client: TestClient, signer: Signer, session: Session
) -> None:
    body = json.dumps([event(None, "open", 1)]).encode()
    stale = client.post("/sendgrid/events", content=body, headers=signer.headers(body, NOW - 3600))
    assert stale.status_code == 403
    for bad, message in (
        (b"[{not json", "not JSON"),
        (b'{"event": "open"}', "expected a JSON array"),
        (
            json.dumps([event(None, "open", 1), event(None, "teleported", 2)]).encode(),
            "event 1: event",
        ),
        (
            json.dumps([{**event(None, "open", 3), "sg_event_id": ""}]).encode(),
            "event 0: sg_event_id",
        ),
    ):
        answer = client.post("/sendgrid/events", content=bad, headers=signer.headers(bad))
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    big = json.dumps([event(None, "open", i) for i in range(2000)]).encode()
    assert (
        client.post("/sendgrid/events", content=big, headers=signer.headers(big)).status_code == 413
    )
    assert count(session, EmailEvent) == 0  # the valid first event of a bad payload included


def test_events_are_stored_once_and_reconcile_a_send_in_doubt(
    client: TestClient, signer: Signer, session: Session, queue_emails: QueueEmails
) -> None:
    [doubt, fine] = queue_emails(2)
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == doubt)
        .values(status=EmailStatus.SENDING, attempts=1)
    )
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == fine)
        .values(status=EmailStatus.SENT, message_id="msgfine", sent_at=T0)
    )
    session.commit()
    batch = [
        event(doubt, "processed", 1),
        event(None, "delivered", 2, sg_message_id="msgfine.filter7"),
    ]
    first = post(client, signer, batch)
    assert first.status_code == 200 and first.json()["reconciled"] == 1
    again = post(client, signer, batch)  # SendGrid retries a POST it thinks failed
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 2
    assert count(session, EmailEvent) == 2
    rows = {e.id: e for e in session.scalars(select(OutboxEmail))}
    assert (rows[doubt].status, rows[doubt].message_id, rows[doubt].attempts) == (
        EmailStatus.SENT,
        "msg1",
        1,
    )
    assert rows[fine].delivery is Delivery.DELIVERED  # found by its SendGrid message id


@pytest.mark.parametrize("order", ["delivered-first", "bounce-first"])
def test_the_outcome_does_not_depend_on_the_order_events_arrive(
    client: TestClient, signer: Signer, session: Session, queue_emails: QueueEmails, order: str
) -> None:
    [email_id] = queue_emails(1)
    address = session.scalar(select(OutboxEmail.to_email).where(OutboxEmail.id == email_id))
    session.execute(
        update(OutboxEmail).where(OutboxEmail.id == email_id).values(status=EmailStatus.SENT)
    )
    session.commit()  # SQLite: our read must not hold the lock the app's writes need
    events = [event(email_id, "delivered", 1), event(email_id, "bounce", 2, type="bounce", email=address),
              event(email_id, "deferred", 3), event(email_id, "open", 4)]  # fmt: skip
    if order == "bounce-first":
        events.reverse()
    for e in events:  # one POST each, as SendGrid may well do
        assert post(client, signer, [e]).status_code == 200
    session.expire_all()
    email = session.get(OutboxEmail, email_id)
    assert (
        email is not None
        and email.delivery is Delivery.BOUNCED
        and email.status is EmailStatus.SENT
    )
    assert (
        session.scalar(
            select(Suppression.reason).where(Suppression.email_key == address.casefold())
        )
        == "bounced"
    )


def test_unsubscribes_spam_reports_and_hard_bounces_suppress_soft_bounces_do_not(
    session: Session, queue_emails: QueueEmails
) -> None:
    events = events_from([
        event(None, "unsubscribe", 1), event(None, "group_unsubscribe", 2), event(None, "spamreport", 3),
        event(None, "bounce", 4, type="bounce"), event(None, "bounce", 5, type="blocked"),
        event(None, "dropped", 6, reason="Unsubscribed Address"), event(None, "click", 7),
    ])  # fmt: skip
    summary = apply_events(session, events, now=T0)
    session.commit()
    got = dict(session.execute(select(Suppression.email_key, Suppression.reason)).tuples().all())
    assert got == {"person1@x.example": "unsubscribed", "person2@x.example": "unsubscribed",
                   "person3@x.example": "spam_report", "person4@x.example": "bounced",
                   "person6@x.example": "unsubscribed"}  # fmt: skip
    assert (summary.stored, summary.unmatched, summary.suppressed) == (7, 7, 5)


def test_saved_payloads_load_from_a_file_and_errors_name_the_line(tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        json.dumps([event(None, "open", 1)]) + "\n\n" + json.dumps(event(None, "click", 2)) + "\n"
    )
    assert [e.event for e in load_event_file(lines)] == ["open", "click"]
    whole = tmp_path / "events.json"
    whole.write_text(json.dumps([event(None, "open", 1), event(None, "delivered", 2)]))
    assert len(load_event_file(whole)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(event(None, "open", 1)) + "\n" + '{"event": "open"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: event 0: sg_event_id: Field required"):
        load_event_file(bad)


def test_odd_values_are_refused_or_ignored_never_a_500(
    client: TestClient, signer: Signer, session: Session
) -> None:
    huge_time = post(client, signer, [event(None, "open", 1, at=10**15)])
    assert huge_time.status_code == 400 and "timestamp" in huge_time.json()["error"]
    odd_id = post(client, signer, [event(None, "open", 2, nurture_email_id="99999999999999999999")])
    assert odd_id.status_code == 200 and odd_id.json()["unmatched"] == 1
    not_text = post(client, signer, [{**event(None, "open", 3), "email": ["a@b"]}])
    assert not_text.status_code == 400


def test_the_first_open_and_click_are_kept_whatever_the_order(
    client: TestClient, signer: Signer, session: Session, queue_emails: QueueEmails
) -> None:
    [email_id] = queue_emails(1)
    session.execute(
        update(OutboxEmail).where(OutboxEmail.id == email_id).values(status=EmailStatus.SENT)
    )
    session.commit()
    late, early = NOW - 60, NOW - 3600
    for e in (event(email_id, "open", 1, at=late), event(email_id, "click", 2, at=late),
              event(email_id, "open", 3, at=early)):  # fmt: skip
        assert post(client, signer, [e]).status_code == 200
    session.expire_all()
    email = session.get(OutboxEmail, email_id)
    assert email is not None
    assert email.opened_at is not None and email.opened_at.timestamp() == early
    assert email.clicked_at is not None and email.clicked_at.timestamp() == late
