"""Per-provider rate limiting: requests per second and jobs in flight, set by the user or learned from the provider.

A flood of requests queues here, in the process, instead of being refused upstream. The limits come from
configuration (`requests_per_s`, `max_in_flight`) and from what the provider says: a 429 pauses new jobs
for its `Retry-After` (or `ratelimit-reset`) and lowers the number of jobs in flight, which then climbs
back one job at a time as jobs succeed; an answer with `ratelimit-remaining: 0` pauses until its reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx

from lightning_client.errors import ConfigurationError, RateLimitError

__all__ = ["RateLimiter"]

#: Seconds new jobs pause after a 429 that says nothing about when to come back.
DEFAULT_PAUSE_S = 1.0
#: Weight of the newest job in the running mean of seconds a job holds its place in flight.
_HOLD_WEIGHT = 0.2
_REMAINING_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining")
_RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset")

Source = Literal["config", "learned"]


class RateLimiter:
    """Requests per second and jobs in flight for one provider; every attempt passes through `slot()`.

    Thread-safe, and usable from several event loops (each waiter is woken on its own loop). Without
    limits it only learns: it pauses after a 429 and caps jobs in flight after one until they succeed.
    """

    def __init__(self, provider: str, *, requests_per_s: float | None = None, max_in_flight: int | None = None) -> None:
        self.provider = provider
        self.requests_per_s: float | None = None
        self.max_in_flight: int | None = None
        self.configure(requests_per_s=requests_per_s, max_in_flight=max_in_flight)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._next_send = 0.0
        self._paused_until = 0.0
        self._epoch = 0  # advanced by every pause: send times reserved before it are void
        self._learned_in_flight: int | None = None
        self._successes = 0
        self._hold_s: float | None = None
        self.refused = 0  # 429s seen

    def configure(self, *, requests_per_s: float | None = None, max_in_flight: int | None = None) -> None:
        """Set the configured limits (None: no limit of that kind)."""
        if requests_per_s is not None and not (isinstance(requests_per_s, (int, float)) and requests_per_s > 0):
            raise ConfigurationError(
                f"requests_per_s must be a number above 0, got {requests_per_s!r}",
                path="requests_per_s",
                provider=self.provider,
            )
        if max_in_flight is not None and not (
            isinstance(max_in_flight, int) and not isinstance(max_in_flight, bool) and max_in_flight >= 1
        ):
            raise ConfigurationError(
                f"max_in_flight must be an integer of at least 1, got {max_in_flight!r}",
                path="max_in_flight",
                provider=self.provider,
            )
        self.requests_per_s = None if requests_per_s is None else float(requests_per_s)
        self.max_in_flight = max_in_flight

    # -- what it holds --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Jobs holding a place now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a place in flight."""
        return len(self._waiters)

    def in_flight_limit(self) -> tuple[int | None, Source | None]:
        """The binding limit on jobs in flight and where it came from (None, None: unlimited)."""
        learned, configured = self._learned_in_flight, self.max_in_flight
        if learned is not None and (configured is None or learned < configured):
            return learned, "learned"
        return (configured, "config") if configured is not None else (None, None)

    @property
    def limited(self) -> bool:
        """Whether any limit applies now (configured, learned, or a pause)."""
        return (
            self.requests_per_s is not None
            or self.in_flight_limit()[0] is not None
            or self._paused_until > time.monotonic()
        )

    def expected_wait_s(self) -> float:
        """Seconds a request arriving now would wait here before it is sent (an estimate)."""
        now = time.monotonic()
        wait = max(0.0, self._paused_until - now)
        if self.requests_per_s is not None:
            wait = max(wait, self._next_send - now)
        cap, _ = self.in_flight_limit()
        if cap is not None and self._in_flight >= cap:
            # Each place frees after about one mean hold; those queued go first.
            wait += (len(self._waiters) // cap + 1) * (self._hold_s or 1.0)
        return wait

    def describe(self) -> dict[str, Any]:
        """The limits in force and where they came from, and what waits behind them (for status pages)."""
        cap, source = self.in_flight_limit()
        paused = max(0.0, self._paused_until - time.monotonic())
        return {
            "requests_per_s": self.requests_per_s,
            "requests_per_s_source": None if self.requests_per_s is None else "config",
            "max_in_flight": cap,
            "max_in_flight_source": source,
            "paused_s": round(paused, 3),
            "in_flight": self._in_flight,
            "queued": len(self._waiters),
            "refused": self.refused,
        }

    # -- the way through ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self, remaining: float | None = None) -> AsyncIterator[None]:
        """Hold a place in flight and a send time for one attempt; learn from how it ends.

        `remaining` is the attempt's time left: a pause that outlasts it is refused at once with a
        `RateLimitError` (nothing was sent), so a router can go elsewhere.
        """
        started = time.monotonic()
        await self._enter(remaining)
        entered = time.monotonic()
        try:
            await self._send_time(remaining, started)
            yield
        except RateLimitError as exc:
            if exc.status_code == 429:
                self.learn(exc.retry_after)
            raise
        else:
            self._succeeded()
        finally:
            self._leave(time.monotonic() - entered)

    async def _enter(self, remaining: float | None) -> None:
        """Wait for a place in flight."""
        with self._lock:
            cap, _ = self.in_flight_limit()
            if not self._waiters and (cap is None or self._in_flight < cap):
                self._in_flight += 1
                return
            self._refuse_if_paused_past(remaining)
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave(None)  # cancelled just after its place was handed over
            else:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiters.remove((loop, waiter))
            raise

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        """On the waiter's loop: hand it the place kept for it (or free the place when it has gone)."""
        if waiter.done():
            self._leave(None)
        else:
            waiter.set_result(None)

    def _leave(self, held_s: float | None) -> None:
        """Free a place in flight (held for `held_s`, None: never used) for the next one waiting."""
        with self._lock:
            self._in_flight -= 1
            if held_s is not None:
                self._hold_s = held_s if self._hold_s is None else self._hold_s + _HOLD_WEIGHT * (held_s - self._hold_s)
            self._wake()

    def _wake(self) -> None:
        """Hand the free places to those waiting, first come first served (called under the lock)."""
        cap, _ = self.in_flight_limit()
        while self._waiters and (cap is None or self._in_flight < cap):
            loop, waiter = self._waiters.popleft()
            if not loop.is_closed():
                self._in_flight += 1
                loop.call_soon_threadsafe(self._grant, waiter)

    async def _send_time(self, remaining: float | None, started: float) -> None:
        """Wait for this request's turn under the requests-per-second limit and any pause."""
        while True:
            with self._lock:
                now = time.monotonic()
                left = None if remaining is None else remaining - (now - started)
                self._refuse_if_paused_past(left)
                at = max(now, self._paused_until)
                if self.requests_per_s is not None:
                    at = max(at, self._next_send)
                    self._next_send = at + 1.0 / self.requests_per_s
                epoch = self._epoch
            if at <= now:
                return
            await asyncio.sleep(at - now)
            if self._epoch == epoch:
                return
            # A pause began while this request waited: its send time is void; queue again behind the pause.

    def _refuse_if_paused_past(self, remaining: float | None) -> None:
        pause = self._paused_until - time.monotonic()
        if remaining is not None and pause > 0 and pause >= remaining:
            raise RateLimitError(
                f"{self.provider} is rate limited for another {pause:.1f}s, past this request's deadline;"
                " nothing was sent",
                provider=self.provider,
                retry_after=pause,
            )

    # -- learning -------------------------------------------------------------------------------------

    def learn(self, retry_after: float | None) -> None:
        """A 429: pause new sends for `retry_after` seconds (default 1 s) and lower the jobs in flight."""
        with self._lock:
            self.refused += 1
            until = time.monotonic() + (retry_after if retry_after and retry_after > 0 else DEFAULT_PAUSE_S)
            if until > self._paused_until:
                self._paused_until = until
                self._next_send = until
                self._epoch += 1
            # The refused job still holds its place: what else is in flight is what the provider accepts.
            self._learned_in_flight = max(1, self._in_flight - 1)
            self._successes = 0

    def observe(self, response: httpx.Response | None) -> None:
        """Read a provider answer's rate-limit headers: none left means a pause until the reset."""
        if response is None:
            return
        headers = response.headers
        remaining = _number(headers, _REMAINING_HEADERS)
        if remaining is None or remaining > 0 or response.status_code == 429:
            return
        reset = _number(headers, _RESET_HEADERS)
        with self._lock:
            until = time.monotonic() + (reset if reset is not None and reset > 0 else DEFAULT_PAUSE_S)
            if until > self._paused_until:
                self._paused_until = until
                self._next_send = max(self._next_send, until)
                self._epoch += 1

    def _succeeded(self) -> None:
        """A job ended without a 429: a learned cap on jobs in flight climbs by one every `cap` successes."""
        with self._lock:
            learned = self._learned_in_flight
            if learned is None:
                return
            self._successes += 1
            if self._successes < learned:
                return
            self._successes = 0
            learned += 1
            configured = self.max_in_flight
            self._learned_in_flight = None if configured is not None and learned >= configured else learned
            self._wake()

    def __repr__(self) -> str:
        cap, _ = self.in_flight_limit()
        return f"RateLimiter({self.provider!r}, requests_per_s={self.requests_per_s}, max_in_flight={cap})"


def _number(headers: httpx.Headers, names: tuple[str, ...]) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None
