"""Retry timing against `retry_after`, with a scripted in-test generator.

The sandbox's 429 advertises Replicate's recorded 30 s reset, too long for a test that
waits it out; this generator raises the rate limit a provider would, with a short
`retry_after`, then succeeds. (Failover on a 30 s rate limit runs against the sandbox in
test_router.py.)
"""

from __future__ import annotations

import time

from tenacity import wait_fixed

import lightning_client as lc
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.result import Cost, GeneratedImage


class Throttled(BaseGenerator):
    """Rate-limited `limited` times with `retry_after`, then serves."""

    name = "throttled"
    model = "scripted"

    def __init__(self, limited: int, retry_after: float) -> None:
        self.limited = limited
        self.retry_after = retry_after
        self.calls: list[float] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _generate(self, ctx: AttemptContext) -> lc.GenerationResult:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.limited:
            raise lc.RateLimitError("throttled", status_code=429, retry_after=self.retry_after)
        image = GeneratedImage(data=b"\x89PNG", width=64, height=64, content_type="image/png")
        return ctx.result([image], model=self.model, cost=Cost(usd=0.001, basis="scripted", estimated=False))


def test_retry_waits_for_retry_after_not_just_the_backoff() -> None:
    generator = Throttled(limited=1, retry_after=0.4)
    router = lc.Router([generator], retries=2, backoff=wait_fixed(0.01))
    result = router.generate("x", timeout_s=5)
    assert [a.outcome for a in result.attempts] == ["failed", "succeeded"]
    assert generator.calls[1] - generator.calls[0] >= 0.4


def test_retry_after_beyond_the_deadline_ends_without_sleeping() -> None:
    generator = Throttled(limited=5, retry_after=30.0)
    router = lc.Router([generator], retries=3, backoff=wait_fixed(0.01))
    started = time.monotonic()
    try:
        router.generate("x", timeout_s=2)
    except lc.AllProvidersFailedError as err:
        assert len(err.attempts) == 1 and "beyond the" in (err.attempts[0].note or "")
    else:
        raise AssertionError("expected AllProvidersFailedError")
    assert time.monotonic() - started < 0.5 and len(generator.calls) == 1


def test_a_rate_limited_provider_is_benched_for_other_requests() -> None:
    generator = Throttled(limited=1, retry_after=0.5)
    router = lc.Router([generator], retries=0)
    try:
        router.generate("x")
    except lc.AllProvidersFailedError:
        pass
    benched = router.breakers["throttled"].acquire()
    assert benched is not None and benched.startswith("rate limited for another")
    time.sleep(0.5)
    assert router.generate("x").provider == "throttled"
    assert router.breakers["throttled"].state == "closed"
