"""A token bucket: at most ``rate`` sends per second on average, bursts of up to one second's
worth. Its clock and sleep are injectable, so a test checks the pacing without waiting."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate or 1.0)
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.waited = 0.0

    def wait(self) -> None:
        """Take one token, sleeping until there is one; no cap: return at once."""
        if self.rate is None:
            return
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            pause = (1.0 - self.tokens) / self.rate
            self.sleep(pause)
            self.waited += pause
            self.updated = self.clock()
            self.tokens = 1.0
        self.tokens -= 1.0
