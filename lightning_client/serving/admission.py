"""`Admission`: the server's bounded queue in front of the generator, and its expected-wait figure."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

__all__ = ["Admission", "QueueFullError"]

#: Weight of the newest request in the moving average of service time.
_EWMA = 0.2


class QueueFullError(Exception):
    """No slot free and the queue is full; `expected_wait_s` is when to try again."""

    def __init__(self, expected_wait_s: float | None) -> None:
        super().__init__("the server's queue is full")
        self.expected_wait_s = expected_wait_s


class Admission:
    """At most `max_concurrency` requests run at once; at most `max_queue` more wait for a slot.

    Must be used from one event loop. Service times of finished requests feed `expected_wait_s`.
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.in_flight = 0
        self.queued = 0
        self.service_s: float | None = None
        self._slots: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    def expected_wait_s(self, generator_wait_s: float | None = None) -> float | None:
        """Seconds a request arriving now would wait before its generator finishes it.

        The server's queue (waiting requests / slots x mean service time) plus what the
        generator reports for its own queue; None when nothing has been observed yet and
        the generator does not say.
        """
        ahead = self.queued + self.in_flight - self.max_concurrency + 1
        if ahead <= 0:
            server_wait: float | None = 0.0
        elif self.service_s is None:
            server_wait = None
        else:
            server_wait = math.ceil(ahead / self.max_concurrency) * self.service_s
        if server_wait is None:
            return generator_wait_s
        return server_wait + (generator_wait_s or 0.0)

    @contextlib.asynccontextmanager
    async def slot(self, generator_wait_s: float | None = None) -> AsyncIterator[float]:
        """Hold a slot for one request; yields the seconds spent queued. Raises `QueueFullError`."""
        slots = self._semaphore()
        if slots.locked() and self.queued >= self.max_queue:
            raise QueueFullError(self.expected_wait_s(generator_wait_s))
        arrived = time.monotonic()
        self.queued += 1
        try:
            await slots.acquire()
        finally:
            self.queued -= 1
        self.in_flight += 1
        started = time.monotonic()
        ok = False
        try:
            yield started - arrived
            ok = True
        finally:
            self.in_flight -= 1
            slots.release()
            if ok:
                took = time.monotonic() - started
                self.service_s = took if self.service_s is None else (1 - _EWMA) * self.service_s + _EWMA * took
