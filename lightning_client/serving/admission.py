"""`Admission`: the server's bounded queue in front of the generator, and its expected-wait figure.

Every request (HTTP or a realtime job) holds a slot while it runs. A queued request leaves the
queue without a slot when its caller goes away (`LeftQueueError`) or the server starts draining
(`ShuttingDownError`), so nothing is sent for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Admission", "LeftQueueError", "QueueFullError", "ShuttingDownError"]

#: Weight of the newest request in the moving average of service time.
_EWMA = 0.2


class QueueFullError(Exception):
    """No slot free and the queue is full; `expected_wait_s` is when to try again."""

    def __init__(self, expected_wait_s: float | None) -> None:
        super().__init__("the server's queue is full")
        self.expected_wait_s = expected_wait_s


class LeftQueueError(Exception):
    """The caller went away while its request waited for a slot (nothing was sent)."""


class ShuttingDownError(Exception):
    """The server is draining: it admits no new work."""


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
        self._closing: asyncio.Event | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    def _closed_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    @property
    def closed(self) -> bool:
        """True once `close()` was called: every new or queued request gets `ShuttingDownError`."""
        return self._closing is not None and self._closing.is_set()

    def close(self) -> None:
        """Admit nothing more; requests waiting in the queue leave it with `ShuttingDownError`."""
        self._closed_event().set()

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
    async def slot(
        self, generator_wait_s: float | None = None, *, gone: asyncio.Future[Any] | None = None
    ) -> AsyncIterator[float]:
        """Hold a slot for one request; yields the seconds spent queued.

        Raises `QueueFullError`, `ShuttingDownError`, or `LeftQueueError` when `gone` (a future
        that completes when the caller goes away) completes before a slot is free.
        """
        if self.closed:
            raise ShuttingDownError()
        slots = self._semaphore()
        if slots.locked() and self.queued >= self.max_queue:
            raise QueueFullError(self.expected_wait_s(generator_wait_s))
        arrived = time.monotonic()
        self.queued += 1
        try:
            await self._acquire(slots, gone)
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

    async def _acquire(self, slots: asyncio.Semaphore, gone: asyncio.Future[Any] | None) -> None:
        """Take a slot, unless the caller goes away or the server closes first."""
        if not slots.locked():  # free: taken at once, before any other request can look
            await slots.acquire()
            if gone is not None and gone.done():
                slots.release()
                raise LeftQueueError()
            return
        acquire = asyncio.ensure_future(slots.acquire())
        closing = asyncio.ensure_future(self._closed_event().wait())
        waits: set[asyncio.Future[Any]] = {acquire, closing} | ({gone} if gone is not None else set())
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._give_up(slots, acquire)
            raise
        finally:
            closing.cancel()
        if gone is not None and gone.done():
            self._give_up(slots, acquire)
            raise LeftQueueError()
        if self.closed:
            self._give_up(slots, acquire)
            raise ShuttingDownError()

    @staticmethod
    def _give_up(slots: asyncio.Semaphore, acquire: asyncio.Future[Any]) -> None:
        if acquire.done() and not acquire.cancelled():
            slots.release()
        else:
            acquire.cancel()
