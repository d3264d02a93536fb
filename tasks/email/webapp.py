"""``nurture serve``: the ASGI app SendGrid and recipients talk to.

* ``POST /sendgrid/events``: the Event Webhook. The raw body's ECDSA signature is checked with
  SendGrid's verification key (``NURTURE_SENDGRID_WEBHOOK_KEY``, as SendGrid shows it) and the
  ``sendgrid`` client's ``EventWebhook``; a timestamp older than ``max_age`` is refused (a
  replayed capture); then every event is stored once and applied (see events.py), all in one
  transaction.
* ``POST /sendgrid/inbound/{secret}``: Inbound Parse; the secret (``NURTURE_INBOUND_SECRET``) in
  the URL is what SendGrid is configured with (see inbound.py).
* ``GET /unsubscribe/{token}`` shows a confirmation button (link scanners follow links; they must
  not unsubscribe anyone); ``POST /unsubscribe/{token}`` is RFC 8058 one-click and the button's
  target: the address is suppressed at once, for every flow.
* ``GET /healthz``.

A bad request (malformed JSON, wrong content type, too large, an unknown event, a bad
signature) gets a 4xx and a log line, and writes nothing: the store is only touched once the
whole payload has been read and validated, and then in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sendgrid import EventWebhook
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tasks.email.events import EventError, apply_events, parse_events, suppress
from tasks.email.inbound import record_inbound
from tasks.email.tokens import read_email_token
from tasks.store.db import session_scope
from tasks.store.models import OutboxEmail, SuppressionReason

log = logging.getLogger("nurture.serve")

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass(frozen=True)
class ServeSettings:
    webhook_key: str | None  # SendGrid's verification key (base64 DER), None: events refused
    inbound_secret: str | None  # None: inbound refused
    max_age: int = 600  # seconds a signed timestamp stays acceptable
    max_event_bytes: int = 5_000_000
    max_inbound_bytes: int = 30_000_000  # SendGrid's own limit for a parsed message

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(
            webhook_key=os.environ.get("NURTURE_SENDGRID_WEBHOOK_KEY") or None,
            inbound_secret=os.environ.get("NURTURE_INBOUND_SECRET") or None,
        )


class TooLarge(Exception):
    pass


def create_app(
    settings: ServeSettings | None = None,
    *,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The app; ``engine`` defaults to the configured store, ``clock`` to the wall clock."""
    settings = settings or ServeSettings.from_env()
    verifier = EventWebhook()
    public_key = (
        verifier.convert_public_key_to_ecdsa(settings.webhook_key) if settings.webhook_key else None
    )

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock(), tz=dt.UTC)

    async def events(request: Request) -> Response:
        if public_key is None:
            return _refuse(request, 503, "the webhook verification key is not configured")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _refuse(request, 415, "expected application/json")
        try:
            body = await _read(request, settings.max_event_bytes)
        except TooLarge:
            return _refuse(request, 413, f"body over {settings.max_event_bytes} bytes")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature or not stamp.isdigit():
            return _refuse(request, 401, "missing signature or timestamp")
        if abs(clock() - int(stamp)) > settings.max_age:
            return _refuse(request, 403, f"timestamp {stamp} is outside {settings.max_age} s")
        try:
            text = body.decode("utf-8")
            valid = verifier.verify_signature(text, signature, stamp, public_key)
        except (UnicodeDecodeError, ValueError):
            valid = False
        if not valid:
            return _refuse(request, 403, "bad signature")
        try:
            parsed = parse_events(text)
        except EventError as exc:
            return _refuse(request, 400, str(exc))
        summary = await run_in_threadpool(_apply, engine, parsed, now())
        log.info("events: %s", summary)
        return JSONResponse(summary)

    async def inbound(request: Request) -> Response:
        secret = request.path_params["secret"]
        if settings.inbound_secret is None or not hmac.compare_digest(
            secret.encode(), settings.inbound_secret.encode()
        ):
            return _refuse(request, 403, "wrong or unset inbound secret")
        kind = request.headers.get("content-type", "")
        if not kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return _refuse(request, 415, "expected a form (multipart/form-data)")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_inbound_bytes:
            return _refuse(request, 413, f"body over {settings.max_inbound_bytes} bytes")
        try:
            form = await request.form(max_files=50, max_fields=100)
        except Exception as exc:  # a malformed multipart body: the parser's own errors vary
            return _refuse(request, 400, f"unreadable form: {type(exc).__name__}")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        await form.close()
        if not fields.get("from") and not fields.get("headers"):
            return _refuse(request, 400, "not an Inbound Parse post: no 'from' and no 'headers'")
        result = await run_in_threadpool(_inbound, engine, fields, now())
        log.info("inbound: %s", result)
        return JSONResponse(result)

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        if read_email_token(token) is None:
            return HTMLResponse(_page("This link is not valid.", None), status_code=404)
        return HTMLResponse(_page("Unsubscribe from these emails?", token))

    async def unsubscribe(request: Request) -> Response:
        key = read_email_token(request.path_params["token"])
        if key is None:
            return _refuse(request, 404, "unknown unsubscribe token")
        done = await run_in_threadpool(_unsubscribe, engine, key, now())
        if not done:
            return _refuse(request, 404, "no such email")
        return HTMLResponse(_page("You are unsubscribed. You will get no more emails.", None))

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/sendgrid/events", events, methods=["POST"]),
            Route("/sendgrid/inbound/{secret}", inbound, methods=["POST"]),
            Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _read(request: Request, limit: int) -> bytes:
    """The raw body as received (the signature covers these bytes), refused past ``limit``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        raise TooLarge from None
    return b"".join(chunks)


def _refuse(request: Request, status: int, why: str) -> Response:
    log.warning("%s %s: %s %s", request.method, request.url.path, status, why)
    return JSONResponse({"error": why}, status_code=status)


def _apply(engine: Engine | None, events: list, now: dt.datetime) -> dict[str, object]:  # type: ignore[type-arg]
    with session_scope(engine=engine) as session:
        return asdict(apply_events(session, events, now=now))


def _inbound(engine: Engine | None, fields: dict[str, str], now: dt.datetime) -> dict[str, object]:
    with session_scope(engine=engine) as session:
        result = record_inbound(session, fields, now=now)
    return {k: (str(v) if v is not None else None) for k, v in asdict(result).items()}


def _unsubscribe(engine: Engine | None, dedupe_key: str, now: dt.datetime) -> bool:
    with session_scope(engine=engine) as session:
        address = session.scalar(
            select(OutboxEmail.to_email).where(OutboxEmail.dedupe_key == dedupe_key)
        )
        if address is None:
            return False
        suppress(session, [(address, SuppressionReason.UNSUBSCRIBED)], source="one-click", now=now)
        return True


def _page(message: str, token: str | None) -> str:
    button = (
        f'<form method="post" action="/unsubscribe/{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if token
        else ""
    )
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>Unsubscribe</title>'
        f"<body><p>{html.escape(message)}</p>{button}</body></html>"
    )
