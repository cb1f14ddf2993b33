"""Per-provider rate limits: a flood queues in the process, counted on the sandbox's side as jobs arrive."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import lightning_client as lc
from lightning_client.providers._http.rate_limit import RateLimiter
from lightning_client.testing import Sandbox


def _fal_config(sb: Sandbox, **limits: object) -> dict[str, object]:
    return {
        "generators": [
            {
                "kind": "fal",
                "api_key": "fal-test",
                "base_url": sb.fal_url,
                "run_url": sb.fal_run_url,
                "rest_url": sb.fal_rest_url,
                **limits,
            }
        ]
    }


def _most_in_one_second(stamps: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s) that starts at an arrival."""
    stamps = sorted(stamps)
    return max(sum(1 for s in stamps[i:] if s < start + 1.0) for i, start in enumerate(stamps))


async def test_a_configured_5_per_second_on_fal_spreads_50_concurrent_requests(sb: Sandbox) -> None:
    router = lc.load_config(_fal_config(sb, requests_per_s=5))
    async with router:
        results = await asyncio.gather(*(router.agenerate(f"p{i}", seed=i) for i in range(50)))
    assert all(r.images for r in results)
    created = [job["created_at"] for job in sb.fal.jobs()]
    assert len(created) == 50
    # 5 send times per second; scheduling may bring one arrival of the next second forward.
    assert _most_in_one_second(created) <= 6
    # 49 intervals of 0.2 s between the first send and the last; arrivals may shift by scheduling.
    assert max(created) - min(created) >= 49 * 0.2 - 1.0


async def test_max_in_flight_bounds_jobs_running_at_once(sb: Sandbox) -> None:
    sb.fal.configure(inference_s=0.2)
    router = lc.load_config(_fal_config(sb, max_in_flight=2))
    async with router:
        results = await asyncio.gather(*(router.agenerate(f"p{i}", seed=i) for i in range(6)))
    assert all(r.images for r in results)
    jobs = sb.fal.jobs()
    assert len(jobs) == 6
    # A place is freed only after a job's result is read, so no third job exists while two run.
    for job in jobs:
        overlapping = [j for j in jobs if j["created_at"] <= job["created_at"] < j["completed_at"]]
        assert len(overlapping) <= 2


async def test_a_429_makes_the_router_count_the_provider_busy(sb: Sandbox) -> None:
    sb.fal.configure(error_status=429)
    fal = lc.FalGenerator.for_sandbox(sb)
    rep = lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url)
    async with lc.Router([fal, rep], max_wait_s=0.5) as router:
        first = await router.agenerate("x", seed=1)
        assert [a.provider for a in first.attempts] == ["fal", "replicate"]
        assert (fal.expected_wait_s() or 0.0) > 0.5  # paused after the 429 (fal sends no Retry-After: 1 s)
        submits = sb.fal.stats()["requests"].get("submit", 0)
        assert 1 <= submits <= 1 + fal.create_retry_limit  # the refused create, sent again in place at most so often
        second = await router.agenerate("x", seed=2)
    assert [(a.provider, a.outcome) for a in second.attempts] == [("fal", "skipped"), ("replicate", "succeeded")]
    assert "busy" in (second.attempts[0].note or "")
    assert sb.fal.stats()["requests"].get("submit", 0) == submits  # the busy provider was sent nothing
    assert fal.rate_limit.describe()["refused"] == 1


async def test_a_pause_past_the_deadline_is_refused_without_sending(sb: Sandbox) -> None:
    fal = lc.FalGenerator.for_sandbox(sb)
    fal.rate_limit.learn(30.0)
    async with fal:
        with pytest.raises(lc.RateLimitError) as caught:
            await fal.agenerate("x", timeout_s=5)
    assert "nothing was sent" in caught.value.message
    assert caught.value.retry_after is not None and caught.value.retry_after > 5
    assert sb.fal.stats()["requests"].get("submit", 0) == 0


async def test_a_learned_cap_on_jobs_in_flight_climbs_back_as_jobs_succeed() -> None:
    limiter = RateLimiter("p")
    async with limiter.slot(), limiter.slot(), limiter.slot():
        limiter.learn(0.01)  # refused with three in flight: two are what the provider takes
        assert limiter.in_flight_limit() == (2, "learned")
    # Every two successes (the cap) lift it by one.
    assert limiter.in_flight_limit() == (3, "learned")
    limiter.configure(max_in_flight=4)
    for _ in range(3):
        async with limiter.slot():
            pass
    assert limiter.in_flight_limit() == (4, "config")


def test_no_requests_remaining_pauses_until_the_reset() -> None:
    limiter = RateLimiter("replicate")
    limiter.observe(httpx.Response(201, headers={"ratelimit-remaining": "599", "ratelimit-reset": "1"}))
    assert not limiter.limited
    limiter.observe(httpx.Response(201, headers={"ratelimit-remaining": "0", "ratelimit-reset": "20"}))
    assert limiter.limited and 15 < limiter.expected_wait_s() <= 20


@pytest.mark.parametrize(
    ("key", "value"), [("requests_per_s", 0), ("requests_per_s", "fast"), ("max_in_flight", 0), ("max_in_flight", 1.5)]
)
def test_bad_limits_in_config_name_the_key(sb: Sandbox, key: str, value: object) -> None:
    with pytest.raises(lc.ConfigurationError) as caught:
        lc.read_config(_fal_config(sb, **{key: value}))
    assert f"generators[0].{key}" in str(caught.value)


def test_limits_are_not_options_of_a_local_generator() -> None:
    with pytest.raises(lc.ConfigurationError) as caught:
        lc.read_config({"generators": [{"kind": "local", "requests_per_s": 5}]})
    assert "generators[0].requests_per_s" in str(caught.value)
