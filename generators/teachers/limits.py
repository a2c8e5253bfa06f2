"""Adaptive concurrency for API teachers: back off when the server says it is overloaded, creep back up.

The limit on requests in flight follows the rules TCP uses for its congestion window (Jacobson 1988;
AIMD: Chiu & Jain 1989): it starts small and doubles per round of answers (slow start: each answer
adds one) until the server first throttles; from then each answer adds ``1 / limit`` (one request
more per round), and each 429 or 503 halves it, at most once per round (answers to requests sent before the
last cut say nothing about the new limit), and a ``Retry-After`` also holds every new request until
that moment. So a client asked for hundreds of requests in flight settles just under the server's
rate or concurrency cap instead of hammering it. Written here because no well-kept asyncio
library offers AIMD with Retry-After (aiolimiter and asyncio.Semaphore hold fixed limits).
"""

from __future__ import annotations

import asyncio
import time


class AdaptiveLimit:
    """An asyncio concurrency limit that adapts to a server's throttling.

    Args:
        maximum: The most requests in flight (``teacher.max_concurrency``).
        start: Where the limit starts (default: 8, or ``maximum`` when smaller).
        minimum: The limit never falls below this.
        decrease: Factor applied on a throttled answer.
    """

    def __init__(self, maximum: int, start: int | None = None, minimum: int = 1, decrease: float = 0.5):
        self.maximum, self.minimum, self.decrease = int(maximum), int(minimum), float(decrease)
        self.limit = float(max(self.minimum, min(self.maximum, start or 8)))
        self.in_flight = 0
        self.epoch = 0  # bumped by every cut
        self.resume_at = 0.0  # monotonic time before which no request starts (Retry-After)
        self.cuts = 0
        self.peak = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on the loop that uses it
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self) -> int:
        """Wait for a free slot (and for any Retry-After); return the epoch the request starts in."""
        changed = self._condition()
        async with changed:
            while True:
                wait = self.resume_at - time.monotonic()
                if wait <= 0 and self.in_flight < int(self.limit):
                    break
                try:
                    await asyncio.wait_for(changed.wait(), timeout=wait if wait > 0 else None)
                except TimeoutError:
                    pass
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return self.epoch

    async def release(
        self, epoch: int, throttled: bool = False, retry_after: float | None = None, answered: bool = True
    ) -> None:
        """A request of ``epoch`` ended: ``answered``, ``throttled`` by the server (429/503), or neither
        (another error: the limit stays)."""
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            if throttled:
                if epoch == self.epoch:  # one cut per round
                    self.limit = max(float(self.minimum), self.limit * self.decrease)
                    self.epoch += 1
                    self.cuts += 1
                if retry_after:
                    self.resume_at = max(self.resume_at, time.monotonic() + retry_after)
            elif answered:  # slow start until the first cut, then one more per round
                grow = 1.0 if self.cuts == 0 else 1.0 / self.limit
                self.limit = min(float(self.maximum), self.limit + grow)
            changed.notify_all()
