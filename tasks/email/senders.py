"""Who delivers an email: SendGrid through its official client, or nobody (the outbox only).

The ``sendgrid`` client has no timeout and no retry of its own: the timeout is set here, and the
retry policy lives in ``sending.py``, where the store makes it exactly-once. A sender reports
what happened; it never decides what to do next.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
from dataclasses import dataclass
from typing import Any, Protocol

import sendgrid
from python_http_client.exceptions import HTTPError

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
    template_id: str | None = None  # a SendGrid dynamic template, rendered by SendGrid
    template_data: dict[str, Any] | None = None


@dataclass(frozen=True)
class SendResult:
    ok: bool
    message_id: str | None = None
    retryable: bool = False
    error: str | None = None
    #: The HTTP status SendGrid answered with; None when no answer came back at all.
    status: int | None = None
    #: Seconds until SendGrid's rate limit resets (a 429's ``X-RateLimit-Reset``).
    retry_after: float | None = None
    #: The request went out and no answer came back: SendGrid may have taken it. Resending
    #: could deliver twice, so such a row waits for the webhook to say what happened.
    maybe_sent: bool = False


class EmailSender(Protocol):
    #: True when the sender only records: ``send_due_emails`` then settles rows in bulk.
    records_only: bool

    def send(self, message: OutgoingMessage) -> SendResult: ...


class OutboxOnlySender:
    """The embedded default: emails stay in the outbox as ``recorded``; nothing leaves."""

    records_only = True

    def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(ok=True)


class SendGridSender:
    records_only = False

    def __init__(self, api_key: str, host: str | None = None, timeout: float = 10.0) -> None:
        if timeout <= 0:
            # python_http_client uses ``timeout or self.timeout``: 0 would mean "wait forever".
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self._api = sendgrid.SendGridAPIClient(
            api_key=api_key, host=host or os.environ.get("SENDGRID_API_HOST") or DEFAULT_HOST
        )
        # python_http_client reads ``self.timeout`` on every request and copies it into each
        # child client it builds (``client.mail.send``): setting it on the root covers them all.
        self._api.client.timeout = timeout

    def send(self, message: OutgoingMessage) -> SendResult:
        try:
            response = self._api.client.mail.send.post(request_body=sendgrid_payload(message))
        except HTTPError as exc:  # SendGrid answered 4xx or 5xx
            return _from_http_error(exc)
        except (OSError, http.client.HTTPException) as exc:
            # No answer: refused, reset or timed out. urllib's URLError and socket timeouts are
            # OSErrors; a connection dropped mid-answer is an HTTPException.
            # urllib wraps failures before the request was written in URLError: safe to retry.
            # Anything else came after the request went out.
            maybe_sent = not isinstance(exc, urllib.error.URLError)
            return SendResult(
                ok=False,
                retryable=not maybe_sent,
                maybe_sent=maybe_sent,
                error=self._no_answer(exc),
            )
        return SendResult(
            ok=True, message_id=response.headers.get("X-Message-Id"), status=response.status_code
        )

    def _no_answer(self, exc: BaseException) -> str:
        if isinstance(exc, urllib.error.URLError):
            # urllib wraps failures while connecting or writing the request: it did not arrive.
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return f"could not reach SendGrid within {self.timeout:g} s"
            return f"could not reach SendGrid: {type(reason).__name__}: {reason}"
        if isinstance(exc, TimeoutError):
            # Raised while waiting for the answer: the request was sent and may have been taken.
            return f"no answer from SendGrid within {self.timeout:g} s (the request was sent)"
        return f"no answer from SendGrid: {type(exc).__name__}: {exc}"


def sendgrid_payload(message: OutgoingMessage) -> dict[str, Any]:
    """The v3 ``/mail/send`` body: both parts, our ids for the webhook, one-click unsubscribe."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": message.to_email}]}],
        "from": {"email": message.from_email, "name": message.from_name},
        "subject": message.subject,
        # SendGrid requires text/plain before text/html.
        "content": [
            {"type": "text/plain", "value": message.text},
            {"type": "text/html", "value": message.html},
        ],
        # Echoed on every webhook event: how a send is reconciled after a crash.
        "custom_args": {
            "nurture_email_id": str(message.email_id),
            "dedupe_key": message.dedupe_key,
        },
        # RFC 8058 one-click unsubscribe, which Gmail and Yahoo require of bulk senders.
        "headers": {
            "List-Unsubscribe": f"<{message.unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    if message.reply_to:
        body["reply_to"] = {"email": message.reply_to}
    if message.template_id:
        # The dynamic template brings its own subject and content.
        del body["subject"], body["content"]
        body["template_id"] = message.template_id
        body["personalizations"][0]["dynamic_template_data"] = message.template_data or {}
    return body


def _from_http_error(exc: HTTPError) -> SendResult:
    status = int(exc.status_code)
    return SendResult(
        ok=False,
        retryable=status == 429 or status >= 500,
        error=f"SendGrid {status}: {_error_message(exc.body)}",
        status=status,
        retry_after=_rate_limit_wait(exc.headers) if status == 429 else None,
    )


def _error_message(body: bytes | str | None) -> str:
    """SendGrid's own words from ``{"errors": [{"message", "field"}]}``, else the raw body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        errors = json.loads(text)["errors"]
        parts = [
            e["message"] + (f" (field: {e['field']})" if e.get("field") else "") for e in errors
        ]
    except (ValueError, KeyError, TypeError):
        return text[:500] or "no error body"
    return "; ".join(parts)[:500] or "no error message"


def _rate_limit_wait(headers: Any) -> float | None:
    """Seconds until the limit resets: ``X-RateLimit-Reset`` is a Unix time in seconds."""
    reset = headers.get("X-RateLimit-Reset") if headers is not None else None
    try:
        return max(float(reset) - time.time(), 0.0) if reset is not None else None
    except ValueError:
        return None


def sender_from_env() -> EmailSender:
    """SendGrid when ``SENDGRID_API_KEY`` is set (host from ``SENDGRID_API_HOST``), else none."""
    key = os.environ.get("SENDGRID_API_KEY")
    if not key:
        return OutboxOnlySender()
    return SendGridSender(key)
