"""Circuit breaker state machine, on a controlled clock."""

from __future__ import annotations

from typing import Any

from lightning_client.routing.breaker import BreakerConfig, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> str:
    """The state read through a call, so each check reads it afresh."""
    return breaker.state


def make(**config: Any) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerConfig(**config), clock=clock), clock


def test_opens_after_consecutive_failures_and_skips_with_reason() -> None:
    breaker, _ = make(failure_threshold=3, cooldown_s=10)
    for _ in range(2):
        assert breaker.acquire() is None
        breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.acquire() is None
    breaker.record_failure()
    assert state(breaker) == "open"
    reason = breaker.acquire()
    assert reason is not None and "circuit breaker open after 3 consecutive failures" in reason
    assert "half-opens in 10.0s" in reason


def test_success_resets_the_consecutive_count() -> None:
    breaker, _ = make(failure_threshold=2, min_calls=100)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) == "closed"


def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    breaker, clock = make(failure_threshold=1, cooldown_s=5)
    breaker.record_failure()
    assert breaker.acquire() is not None
    clock.now += 5
    assert state(breaker) == "half-open"
    assert breaker.acquire() is None  # the probe
    second = breaker.acquire()
    assert second is not None and "probe is in flight" in second
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.acquire() is None


def test_half_open_probe_failure_reopens_for_a_full_cooldown() -> None:
    breaker, clock = make(failure_threshold=1, cooldown_s=5)
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire() is None
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.now += 4.9
    assert breaker.acquire() is not None
    clock.now += 0.1
    assert breaker.acquire() is None


def test_released_probe_lets_the_next_caller_probe() -> None:
    breaker, clock = make(failure_threshold=1, cooldown_s=1)
    breaker.record_failure()
    clock.now += 1
    assert breaker.acquire() is None
    breaker.release()
    assert breaker.acquire() is None


def test_failure_rate_opens_without_consecutive_failures() -> None:
    breaker, _ = make(failure_threshold=100, failure_rate=0.5, window=10, min_calls=10)
    for i in range(9):
        breaker.record_failure() if i % 2 else breaker.record_success()
    assert state(breaker) == "closed"  # 4 of 9: below min_calls anyway
    breaker.record_failure()  # 5 of 10
    assert state(breaker) == "open"


def test_bench_skips_for_the_rate_limit_then_allows_without_opening() -> None:
    breaker, clock = make(failure_threshold=1)
    breaker.bench(2.0)
    reason = breaker.acquire()
    assert reason is not None and reason.startswith("rate limited for another 2.0s")
    clock.now += 2.0
    assert breaker.acquire() is None
    assert state(breaker) == "closed"


def test_reset_closes() -> None:
    breaker, _ = make(failure_threshold=1)
    breaker.record_failure()
    breaker.reset()
    assert state(breaker) == "closed" and breaker.acquire() is None
