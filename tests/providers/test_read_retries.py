"""`ReadRetries`: in-place retries of idempotent reads, with backoff, jitter, Retry-After and the deadline."""

from __future__ import annotations

import pytest

import lightning_client as lc
from lightning_client.providers._http.exchange import ReadRetries, read_retryable


def test_only_reads_that_may_succeed_again_are_retried() -> None:
    assert read_retryable(lc.ProviderUnavailableError("reset"))  # transport failure, no status
    assert read_retryable(lc.ProviderUnavailableError("busy", status_code=503))
    assert read_retryable(lc.RateLimitError("slow down", status_code=429))
    assert read_retryable(lc.ProviderResponseError("cut off", retryable=True))  # a damaged body
    assert not read_retryable(lc.ProviderUnavailableError("job error", status_code=500))
    assert not read_retryable(lc.ProviderResponseError("not found", status_code=404))
    assert not read_retryable(lc.ProviderUnavailableError("told not to", status_code=503, retryable=False))
    assert not read_retryable(lc.AuthenticationError("no", status_code=401))


def test_backoff_grows_with_jitter_honours_retry_after_and_stops_at_the_limit_or_deadline() -> None:
    remaining: list[float | None] = [None]
    retries = ReadRetries(lambda: remaining[0], lambda: None, limit=3, first_s=0.1, cap_s=0.3)
    busy = lc.ProviderUnavailableError("busy", status_code=503)
    delays = [retries.delay(n, busy) for n in range(3)]
    assert all(d is not None for d in delays)
    assert 0.05 <= delays[0] <= 0.15 and 0.1 <= delays[1] <= 0.3 and 0.15 <= delays[2] <= 0.45  # type: ignore[operator]
    assert retries.delay(3, busy) is None  # the limit
    throttled = lc.RateLimitError("wait", status_code=429, retry_after=2.0)
    assert retries.delay(0, throttled) == 2.0  # Retry-After wins over the backoff
    remaining[0] = 1.0
    assert retries.delay(0, throttled) is None  # it would sleep past the deadline


async def test_run_retries_in_place_and_counts_each_retry() -> None:
    counted: list[int] = []
    calls = 0

    async def read() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise lc.ProviderUnavailableError("busy", status_code=503)
        return "ok"

    retries = ReadRetries(lambda: None, lambda: counted.append(1), first_s=0.001)
    assert await retries.run(read, what="status") == "ok"
    assert calls == 3 and len(counted) == 2

    async def broken() -> str:
        raise lc.ProviderResponseError("gone", status_code=404)

    with pytest.raises(lc.ProviderResponseError):
        await retries.run(broken, what="result")
    assert len(counted) == 2  # not retried
