"""Per-provider concurrency and request-rate limits, applied by wrapping a generator."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from lightning_client._sync import run_sync
from lightning_client.generator import Capabilities, Generator
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult

__all__ = ["LimitedGenerator", "RateLimiter", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """Requests per second from 'N/s', 'N/min' or 'N/h'."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r} is invalid; allowed: a positive 'N/s', 'N/min' or 'N/h', e.g. '30/min'")
    return float(match.group(1)) / _PER[match.group(2)]


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart (no bursts)."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class LimitedGenerator:
    """A generator that holds a concurrency slot and a rate-limit turn around each call.

    Everything else (name, capabilities, attempts, cancellation) is the wrapped generator's.
    """

    def __init__(self, inner: Generator, *, concurrency: int | None = None, per_second: float | None = None) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency for {inner.name} must be at least 1, got {concurrency}")
        self.inner = inner
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._rate = RateLimiter(per_second) if per_second else None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        if self._slots is None:
            return await self._start(request)
        async with self._slots:
            return await self._start(request)

    async def _start(self, request: GenerationRequest) -> GenerationResult:
        if self._rate is not None:
            await self._rate.acquire()
        return await self.inner.agenerate(request)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return run_sync(self.agenerate(request))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"LimitedGenerator({self.inner!r})"
