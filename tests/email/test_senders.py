"""The SendGrid sender, with the official client, against the local SendGrid-compatible server."""

from __future__ import annotations

import socket
import time

import pytest

from tasks.email.senders import (
    OutboxOnlySender,
    OutgoingMessage,
    SendGridSender,
    sender_from_env,
)
from tests.fake_sendgrid import FakeSendGrid

MESSAGE = OutgoingMessage(
    email_id=42,
    dedupe_key="cadence:7:2",
    to_email="pat@acme.example",
    from_email="hello@nurture.example",
    from_name="The Nurture team",
    reply_to="replies@nurture.example",
    subject="Welcome, Pat",
    text="Hi Pat,\n",
    html="<p>Hi Pat,</p>\n",
    unsubscribe_url="https://nurture.example/unsubscribe/abc",
)


def test_sends_once_with_our_ids_and_one_click_unsubscribe(
    sendgrid_server: FakeSendGrid, sendgrid_sender: SendGridSender
) -> None:
    result = sendgrid_sender.send(MESSAGE)

    assert result.ok and result.status == 202
    assert result.message_id == sendgrid_server.message_ids[0]
    [request] = sendgrid_server.received
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {sendgrid_server.api_key}"
    body = request.body
    assert body["personalizations"] == [{"to": [{"email": "pat@acme.example"}]}]
    assert body["from"] == {"email": "hello@nurture.example", "name": "The Nurture team"}
    assert body["reply_to"] == {"email": "replies@nurture.example"}
    assert body["custom_args"] == {"nurture_email_id": "42", "dedupe_key": "cadence:7:2"}
    assert body["headers"] == {
        "List-Unsubscribe": "<https://nurture.example/unsubscribe/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi Pat,\n"},
        {"type": "text/html", "value": "<p>Hi Pat,</p>\n"},
    ]


def test_a_rejected_email_is_not_retryable_and_says_why(
    sendgrid_server: FakeSendGrid, sendgrid_sender: SendGridSender
) -> None:
    sendgrid_server.answer_next(400)
    result = sendgrid_sender.send(MESSAGE)
    assert (result.ok, result.retryable, result.status) == (False, False, 400)
    assert result.error == "SendGrid 400: " + (
        "The subject is required. You can get around this requirement if you use a template."
    )


def test_the_fake_validates_like_sendgrid(sendgrid_server: FakeSendGrid) -> None:
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=2)
    result = sender.send(
        OutgoingMessage(**{**MESSAGE.__dict__, "subject": "", "to_email": "not-an-address"})
    )
    assert (result.ok, result.retryable, result.status) == (False, False, 400)
    assert "(field: personalizations.0.to)" in (result.error or "")
    assert "(field: subject)" in (result.error or "")
    assert sendgrid_server.accepted == []


@pytest.mark.parametrize("status", [401, 403])
def test_account_errors_are_not_retryable(sendgrid_server: FakeSendGrid, status: int) -> None:
    sendgrid_server.answer_next(status)
    result = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host).send(MESSAGE)
    assert (result.ok, result.retryable, result.status) == (False, False, status)


def test_a_wrong_key_gets_401(sendgrid_server: FakeSendGrid) -> None:
    result = SendGridSender("SG.wrong", host=sendgrid_server.host).send(MESSAGE)
    assert (result.ok, result.retryable, result.status) == (False, False, 401)
    assert "invalid, expired, or revoked" in (result.error or "")


def test_server_errors_and_rate_limits_are_retryable(
    sendgrid_server: FakeSendGrid, sendgrid_sender: SendGridSender
) -> None:
    sendgrid_server.answer_next(500)
    sendgrid_server.answer_next(429)
    sendgrid_server.rate_limit_reset_in = 20
    failed, limited, ok = (sendgrid_sender.send(MESSAGE) for _ in range(3))
    assert (failed.retryable, failed.status, failed.retry_after) == (True, 500, None)
    assert (limited.retryable, limited.status) == (True, 429)
    assert limited.retry_after is not None and 18 < limited.retry_after <= 20
    assert ok.ok and len(sendgrid_server.accepted) == 1


def test_a_hanging_api_times_out_and_may_have_sent(sendgrid_server: FakeSendGrid) -> None:
    sendgrid_server.hang_next(seconds=5)
    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=0.3)
    started = time.monotonic()
    result = sender.send(MESSAGE)
    assert time.monotonic() - started < 2  # the client's own default would wait forever
    assert (result.ok, result.retryable, result.maybe_sent, result.status) == (
        False,
        False,
        True,
        None,
    )
    assert result.error == "no answer from SendGrid within 0.3 s (the request was sent)"


def test_nobody_listening_is_retryable() -> None:
    with socket.socket() as s:  # a free port, then nobody on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = SendGridSender("SG.key", host=f"http://127.0.0.1:{port}", timeout=1).send(MESSAGE)
    assert (result.ok, result.retryable) == (False, True)
    assert (result.error or "").startswith("could not reach SendGrid: ConnectionRefusedError")


def test_a_zero_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        SendGridSender("SG.key", timeout=0)


def test_sender_from_env(monkeypatch: pytest.MonkeyPatch, sendgrid_server: FakeSendGrid) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    assert isinstance(sender_from_env(), OutboxOnlySender)
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.api_key)
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.host)
    sender = sender_from_env()
    assert isinstance(sender, SendGridSender) and sender.send(MESSAGE).ok
    assert len(sendgrid_server.accepted) == 1
