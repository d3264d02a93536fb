"""Who delivers an email: SendGrid through its official client, or nobody (the outbox only).

The ``sendgrid`` client has no timeout and no retry of its own: the timeout is set here and the
retry policy lives in ``sending.py``, where the store can make it exactly-once.
"""

from __future__ import annotations

import json
import os
import urllib.error
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_HOST = "https://api.sendgrid.com"


@dataclass(frozen=True)
class OutgoingMessage:
    email_id: int
    dedupe_key: str
    to_email: str
    from_email: str
    from_name: str
    reply_to: str | None
    subject: str
    text: str
    html: str
    unsubscribe_url: str


@dataclass(frozen=True)
class SendResult:
    ok: bool
    message_id: str | None = None
    retryable: bool = False
    error: str | None = None


class EmailSender(Protocol):
    #: True when the sender only records (nothing leaves the machine).
    records_only: bool

    def send(self, message: OutgoingMessage) -> SendResult: ...


class OutboxOnlySender:
    """The embedded default: emails stay in the outbox as ``recorded``; nothing is sent."""

    records_only = True

    def send(self, message: OutgoingMessage) -> SendResult:  # pragma: no cover - never called
        raise RuntimeError("the outbox-only sender records emails in bulk and sends nothing")


class SendGridSender:
    records_only = False

    def __init__(self, api_key: str, host: str | None = None, timeout: float = 10.0) -> None:
        import sendgrid

        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=host or DEFAULT_HOST)
        self._client.client.timeout = timeout

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": message.to_email}]}],
            "from": {"email": message.from_email, "name": message.from_name},
            "subject": message.subject,
            "content": [
                {"type": "text/plain", "value": message.text},
                {"type": "text/html", "value": message.html},
            ],
            # Our own id travels with every webhook event: how a send is reconciled.
            "custom_args": {
                "nurture_email_id": str(message.email_id),
                "dedupe_key": message.dedupe_key,
            },
            "headers": {
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }
        if message.reply_to:
            body["reply_to"] = {"email": message.reply_to}
        return body

    def send(self, message: OutgoingMessage) -> SendResult:
        from python_http_client.exceptions import HTTPError

        try:
            response = self._client.client.mail.send.post(request_body=self.payload(message))
        except HTTPError as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            return SendResult(
                ok=False,
                retryable=status == 429 or status >= 500,
                error=f"HTTP {status}: {_sendgrid_error(getattr(exc, 'body', b''))}",
            )
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            return SendResult(ok=False, retryable=True, error=f"transport: {exc}")
        headers = {k.lower(): v for k, v in dict(response.headers or {}).items()}
        return SendResult(ok=True, message_id=headers.get("x-message-id"))


def _sendgrid_error(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        errors = json.loads(text).get("errors", [])
        return "; ".join(str(e.get("message", e)) for e in errors) or text[:500]
    except (ValueError, AttributeError):
        return text[:500]


def sender_from_env() -> EmailSender:
    """SendGrid when ``SENDGRID_API_KEY`` is set, else the outbox only."""
    key = os.environ.get("SENDGRID_API_KEY")
    if not key:
        return OutboxOnlySender()
    return SendGridSender(key, host=os.environ.get("SENDGRID_API_HOST"))
