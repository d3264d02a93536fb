"""Sending and webhook throughput, each against a lower bound measured in the same run.

    python benchmarks/send.py [--emails 2000] [--latency 0.02] [--events 10000] [--database URL]

Sending: N queued emails through the real send path (claim, hand over, the official
``sendgrid`` client, record: two commits per email) to the local SendGrid-compatible server,
against the lower bound of posting the very same ``/v3/mail/send`` bodies with ``urllib`` (what
the client's transport does, a connection per request) and no store at all. ``--latency`` is the
time the server takes per request (SendGrid's API answers in tens to hundreds of ms; 0 measures
our overhead alone). Goal: ours / raw >= 0.9.

Webhook: a burst of ``--events`` signed events, posted by 8 concurrent clients in SendGrid-size
batches (100 events) to ``nurture serve``'s app under uvicorn on loopback; every event must be
stored exactly once (zero loss, zero 5xx). Lower bound: the same posts to an app that verifies
the signature and answers without storing.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import json
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# The local SendGrid-compatible server lives with the tests; the benchmark runs from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config.loader import load_config
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.senders import SendGridSender, sendgrid_payload
from tasks.email.sending import _message, send_due_emails
from tasks.email.webapp import SIGNATURE_HEADER, TIMESTAMP_HEADER, ServeSettings, create_app
from tasks.store.db import make_engine
from tasks.store.models import EmailEvent, Lead, LeadStatus, OutboxEmail
from tasks.store.schema import upgrade
from tests.fake_sendgrid import FakeSendGrid

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)  # a Monday, business hours in New York


def queue(engine: Any, n: int) -> None:
    config = load_config()
    with Session(engine) as session:
        leads = [
            Lead(email=f"p{i}@bench{i % 97}.example", email_key=f"p{i}@bench{i % 97}.example",
                 first_name="Pat", last_name=f"Doe{i}", country="US", status=LeadStatus.NURTURING,
                 status_changed_at=T0, created_at=T0, tags=[])
            for i in range(n)
        ]  # fmt: skip
        session.add_all(leads)
        session.flush()
        emails = [QueuedEmail(f"bench:{lead.id}", lead.id, "welcome", {}, T0) for lead in leads]
        enqueue_emails(session, config, emails, run_id=None, as_of=T0)
        session.commit()


def bodies(engine: Any) -> list[bytes]:
    """The exact request bodies the send path will post."""
    sending = load_config().sending
    with Session(engine) as session:
        rows = session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).all()
        from tasks.email.sending import Claimed

        return [
            json.dumps(sendgrid_payload(_message(Claimed(r.id, r.dedupe_key, r.to_email, r.subject,
                       r.body_text, r.body_html, r.due_at, r.attempts), sending))).encode()
            for r in rows
        ]  # fmt: skip


def raw_post(server: FakeSendGrid, payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for body in payloads:
        request = urllib.request.Request(
            f"{server.host}/v3/mail/send", data=body, method="POST",
            headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
    return time.perf_counter() - started


def send_bench(n: int, latency: float, url: str | None, workdir: Path) -> None:
    engine = make_engine(url or f"sqlite:///{workdir / 'send.db'}")
    upgrade(engine)
    queue(engine, n)
    payloads = bodies(engine)
    server = FakeSendGrid().start()
    server.latency = latency
    try:
        raw = raw_post(server, payloads)
        server.accepted.clear()
        sender = SendGridSender(server.api_key, host=server.host, timeout=10.0)
        started = time.perf_counter()
        summary = send_due_emails(engine, sender, as_of=T0, config=_unpaced())
        ours = time.perf_counter() - started
    finally:
        server.stop()
    assert summary.sent == n and len(server.accepted) == n, (summary, len(server.accepted))
    print(f"sending {n} emails, server latency {latency * 1000:.0f} ms: "
          f"ours {n / ours:,.0f}/s ({ours:.1f} s), raw HTTP {n / raw:,.0f}/s ({raw:.1f} s), "
          f"ratio {raw / ours:.2f}")  # fmt: skip


def _unpaced() -> Any:
    config = load_config()
    sending = config.sending.model_copy(update={"max_per_second": None})
    return dataclasses.replace(config, sending=sending)


# --- webhook ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(app: Any) -> tuple[uvicorn.Server, int]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def _burst(port: int, posts: list[tuple[bytes, dict[str, str]]]) -> tuple[float, list[int]]:
    def one(item: tuple[bytes, dict[str, str]]) -> int:
        body, headers = item
        request = urllib.request.Request(f"http://127.0.0.1:{port}/sendgrid/events", data=body,
                                         method="POST", headers=headers)  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, posts))
    return time.perf_counter() - started, statuses


def webhook_bench(events: int, url: str | None, workdir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()  # fmt: skip
    now = int(time.time())
    posts = []
    for start in range(0, events, 100):
        batch = [{"sg_event_id": f"burst-{i}", "event": ("delivered", "open", "click")[i % 3],
                  "email": f"p{i}@bench.example", "timestamp": now - 5,
                  "sg_message_id": f"m{i}.filter"} for i in range(start, min(start + 100, events))]  # fmt: skip
        body = json.dumps(batch).encode()
        signature = key.sign(str(now).encode() + body, ec.ECDSA(hashes.SHA256()))
        posts.append((body, {SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                             TIMESTAMP_HEADER: str(now), "Content-Type": "application/json"}))  # fmt: skip

    engine = make_engine(url or f"sqlite:///{workdir / 'events.db'}")
    upgrade(engine)
    settings = ServeSettings(webhook_key=public, inbound_secret=None)
    real = create_app(settings, engine=engine)
    server, port = _serve(real)
    try:
        ours, statuses = _burst(port, posts)
    finally:
        server.should_exit = True
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(EmailEvent))
    failures = sum(1 for s in statuses if s != 200)

    async def verify_only(request: Request) -> Response:
        from sendgrid import EventWebhook

        body = await request.body()
        hook = EventWebhook(public)
        ok = hook.verify_signature(body.decode(), request.headers[SIGNATURE_HEADER],
                                   request.headers[TIMESTAMP_HEADER])  # fmt: skip
        json.loads(body)
        return JSONResponse({"ok": ok})

    bare, port2 = _serve(
        Starlette(routes=[Route("/sendgrid/events", verify_only, methods=["POST"])])
    )
    try:
        lower, _ = _burst(port2, posts)
    finally:
        bare.should_exit = True
    print(f"webhook burst of {events} events in {len(posts)} signed posts, 8 clients: "
          f"{events / ours:,.0f} events/s ({ours:.1f} s), stored {stored} (lost "
          f"{events - (stored or 0)}), non-200 answers {failures}; verify-only bound "
          f"{events / lower:,.0f} events/s, ratio {lower / ours:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--database", help="a SQLAlchemy URL of an empty store (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        send_bench(args.emails, args.latency, args.database, Path(tmp))
        if args.database:
            _wipe(args.database)
        webhook_bench(args.events, args.database, Path(tmp))


def _wipe(url: str) -> None:
    from sqlalchemy import text

    with make_engine(url).begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))


if __name__ == "__main__":
    main()
