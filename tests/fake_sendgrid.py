"""A small SendGrid-compatible HTTP server on loopback for tests: POST /v3/mail/send.

It checks the API key and the body's shape, records what it accepted, answers 202 with an
X-Message-Id, and can be told to answer an error (or hang) for the next N requests.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeSendGrid:
    api_key: str = "SG.test-key"
    accepted: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: deque[int | str] = field(default_factory=deque)  # status codes, or "hang"
    hang_seconds: float = 2.0

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v3/mail/send":
                    return self._reply(404, {"errors": [{"message": "not found"}]})
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._reply(401, {"errors": [{"message": "authorization required"}]})
                if fake.script:
                    step = fake.script.popleft()
                    if step == "hang":
                        time.sleep(fake.hang_seconds)
                        return self._reply(202, None)
                    if step == 429:
                        return self._reply(
                            429,
                            {"errors": [{"message": "too many requests"}]},
                            {"X-RateLimit-Reset": str(int(time.time()) + 1)},
                        )
                    return self._reply(int(step), {"errors": [{"message": f"scripted {step}"}]})
                try:
                    payload = json.loads(body)
                    problem = _shape_problem(payload)
                except ValueError:
                    problem = "body is not JSON"
                if problem:
                    return self._reply(400, {"errors": [{"message": problem, "field": None}]})
                fake.accepted.append(payload)
                fake.headers.append(dict(self.headers))
                self._reply(202, None, {"X-Message-Id": uuid.uuid4().hex[:22]})

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeSendGrid:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _shape_problem(payload: dict[str, Any]) -> str | None:
    people = payload.get("personalizations")
    if not people or not all(p.get("to") and all("email" in t for t in p["to"]) for p in people):
        return "personalizations[].to[].email is required"
    if "email" not in payload.get("from", {}):
        return "from.email is required"
    if "template_id" not in payload and not (payload.get("subject") and payload.get("content")):
        return "subject and content are required without a template_id"
    return None
