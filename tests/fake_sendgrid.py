"""A small SendGrid-compatible HTTP server on loopback for tests: ``POST /v3/mail/send``.

It checks ``Authorization: Bearer <key>`` and the body's shape the way SendGrid does, records
every request and every accepted one, and answers 202 with an ``X-Message-Id``. It can be told
to answer 400, 401, 403, 429 or 500 (with SendGrid-style JSON errors), or to hang, for the next
N requests.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERRORS = {
    400: "The subject is required. You can get around this requirement if you use a template.",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "The from address does not match a verified Sender Identity.",
    429: "too many requests",
    500: "internal server error",
}


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it is not JSON


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.test-key") -> None:
        self.api_key = api_key
        self.received: list[Request] = []  # every request, answered or not
        self.accepted: list[Request] = []  # the ones answered 202
        self.message_ids: list[str] = []  # X-Message-Id of each accepted request, in order
        self.rate_limit_reset_in = 0.0  # seconds until X-RateLimit-Reset on a 429
        self.latency = 0.0  # seconds each request takes before its answer (a real network's)
        self._script: deque[tuple[str, int, float]] = (
            deque()
        )  # ("answer", status, 0) / ("hang", 0, s)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeSendGrid:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes any hanging handler
        self._server.shutdown()
        self._server.server_close()

    def answer_next(self, status: int, times: int = 1) -> None:
        """The next ``times`` requests get ``status`` with SendGrid's JSON error body."""
        if status not in ERRORS:
            raise ValueError(f"no canned answer for {status}")
        with self._lock:
            self._script.extend([("answer", status, 0.0)] * times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests get no answer for ``seconds`` (then the connection closes)."""
        with self._lock:
            self._script.extend([("hang", 0, seconds)] * times)

    def _next_step(self) -> tuple[str, int, float] | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _log(self, request: Request, accepted_id: str | None = None) -> None:
        with self._lock:
            self.received.append(request)
            if accepted_id is not None:
                self.accepted.append(request)
                self.message_ids.append(accepted_id)


def _handler(fake: FakeSendGrid) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            request = Request(self.path, dict(self.headers.items()), body)
            if fake.latency:
                time.sleep(fake.latency)
            step = fake._next_step()
            if step and step[0] == "hang":
                fake._log(request)
                fake._closing.wait(step[2])
                self.close_connection = True
                return
            if step:
                fake._log(request)
                return self._error(step[1])
            if self.path != "/v3/mail/send":
                fake._log(request)
                return self._reply(404, {"errors": [{"field": None, "message": "not found"}]})
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                fake._log(request)
                return self._error(401)
            problems = shape_problems(body)
            if problems:
                fake._log(request)
                return self._reply(400, {"errors": problems})
            message_id = secrets.token_urlsafe(16)
            fake._log(request, accepted_id=message_id)
            self._reply(202, None, {"X-Message-Id": message_id})

        def _error(self, status: int) -> None:
            headers = {}
            if status == 429:
                reset = int(time.time() + fake.rate_limit_reset_in)
                headers = {
                    "X-RateLimit-Limit": "600",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                }
            self._reply(status, {"errors": [{"field": None, "message": ERRORS[status]}]}, headers)

        def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client is gone (a killed sender): it never reads the answer

    return Handler


def shape_problems(body: Any) -> list[dict[str, Any]]:
    """The checks SendGrid makes that our payload could fail, in its error format."""
    if not isinstance(body, dict):
        return [{"field": None, "message": "Bad Request: the body is not a JSON object"}]
    problems: list[tuple[str, str]] = []
    people = body.get("personalizations")
    if not isinstance(people, list) or not people:
        problems.append(("personalizations", "The personalizations field is required."))
    else:
        for i, person in enumerate(people):
            to = person.get("to") if isinstance(person, dict) else None
            if not isinstance(to, list) or not to or not all(_has_email(t) for t in to):
                problems.append((f"personalizations.{i}.to", "Each to must have an email."))
    if not _has_email(body.get("from")):
        problems.append(("from.email", "The from email is required."))
    templated = "template_id" in body
    if not templated and not body.get("subject"):
        problems.append(("subject", ERRORS[400]))
    content = body.get("content")
    if not templated and not (
        isinstance(content, list) and content and all(_has_value(c) for c in content)
    ):
        problems.append(("content", "Each content must have a type and a value."))
    for name in ("custom_args", "headers"):
        values = body.get(name, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            problems.append((name, f"Each {name} value must be a string."))
    return [{"field": field, "message": message} for field, message in problems]


def _has_email(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("email"), str) and "@" in value["email"]


def _has_value(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("type")) and bool(value.get("value"))
