"""Per-generator circuit breaker: stop sending to a provider that keeps failing.

States: closed (send), open (skip until the cooldown ends), half-open (let one probe
through; its success closes the breaker, its failure opens it again). The breaker opens
after `failure_threshold` consecutive failures, or when at least `min_calls` of the last
`window` calls ended and the failure share reached `failure_rate`. A rate limit with a
known `retry_after` benches the provider for that long without counting as a failure.

State is guarded by a threading lock and uses `time.monotonic`, so one breaker serves
sync calls (background loop) and async calls (any loop) alike.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


class BreakerConfig(BaseModel):
    """When a breaker opens and how long it stays open."""

    model_config = ConfigDict(frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    window: int = Field(default=20, ge=1)
    min_calls: int = Field(default=10, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0.0)


class CircuitBreaker:
    """The breaker of one generator."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=self.config.window)
        self._open_until = 0.0
        self._benched_until = 0.0
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cooldown ended reads as half-open)."""
        with self._lock:
            self._advance()
            return self._state

    def _advance(self) -> None:
        if self._state == "open" and self._clock() >= self._open_until:
            self._state = "half-open"
            self._probe_out = False

    def acquire(self) -> str | None:
        """Ask to send one call: None when allowed, else why the provider is skipped.

        In the half-open state only one probe is let through at a time.
        """
        with self._lock:
            now = self._clock()
            if now < self._benched_until:
                return f"rate limited for another {self._benched_until - now:.1f}s"
            self._advance()
            if self._state == "open":
                return (
                    f"circuit breaker open after {self._consecutive} consecutive failures; "
                    f"half-opens in {self._open_until - now:.1f}s"
                )
            if self._state == "half-open":
                if self._probe_out:
                    return "circuit breaker half-open and its probe is in flight"
                self._probe_out = True
            return None

    def release(self) -> None:
        """Give back a call that ended without telling anything about the provider's health."""
        with self._lock:
            self._probe_out = False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._recent.append(True)
            self._state = "closed"
            self._probe_out = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            self._recent.append(False)
            self._advance()
            failures = self._recent.count(False)
            rate_tripped = len(self._recent) >= self.config.min_calls and (
                failures / len(self._recent) >= self.config.failure_rate
            )
            if self._state == "half-open" or self._consecutive >= self.config.failure_threshold or rate_tripped:
                self._state = "open"
                self._open_until = self._clock() + self.config.cooldown_s
            self._probe_out = False

    def bench(self, seconds: float) -> None:
        """Skip the provider for `seconds` (a rate limit's retry_after) without opening."""
        with self._lock:
            self._benched_until = max(self._benched_until, self._clock() + seconds)
            self._probe_out = False

    def reset(self) -> None:
        """Close the breaker and forget its history."""
        with self._lock:
            self._state = "closed"
            self._consecutive = 0
            self._recent.clear()
            self._benched_until = 0.0
            self._probe_out = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r})"
