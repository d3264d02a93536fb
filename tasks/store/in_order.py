"""A session's statements run in order by a thread of their own, while the caller goes on.

A writer that waits for each of its statements leaves the database idle while it computes and
itself idle while the database works. Handing statements to one thread that runs them in turn
lets the two overlap: psycopg and sqlite3 let go of the interpreter while the server works.

Everything that touches the session goes through the thread, in the order it was handed over,
so the session is used by one thread at a time, as it must be. After the first error nothing
more runs: every later job fails with that error, and so does ``close``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, TypeVar

T = TypeVar("T")


class InOrder:
    """Jobs run one at a time, in the order submitted, in a thread of their own."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._error: BaseException | None = None
        self._abandoned = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``job(*args)`` after every job submitted before it; its future has its result."""
        if self._closed:
            raise RuntimeError("submitted to a closed InOrder")
        future: Future[T] = Future()
        self._jobs.put((future, lambda: job(*args)))
        return future

    def call(self, job: Callable[..., T], *args: Any) -> T:
        """``submit`` and wait: the result once every earlier job has run too."""
        return self.submit(job, *args).result()

    def close(self) -> None:
        """Wait for every job to run; raise the first error any of them met."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Run no job that has not started; wait for the one running, if any, to end."""
        self._abandoned = True
        self._stop()

    def _stop(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if self._error is not None:
                future.set_exception(self._error)
                continue
            if self._abandoned:
                future.set_exception(CancelledError())
                continue
            try:
                future.set_result(job())
            except BaseException as error:  # handed to whoever waits, then to close()
                self._error = error
                future.set_exception(error)
