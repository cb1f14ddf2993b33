"""The server's admission limits, from what it serves unless the operator sets them, and where each came from.

- A local generator: its batch capacity (one batch on the device, one forming) and a queue of a few batches.
- A hosted one: a generous number in flight, bounded by the provider's rate limits (`max_in_flight`, and
  `requests_per_s` times a job's expected seconds); a queue of about a minute of requests at that rate.
- A router: the sum of its members' limits in flight, the largest of their queues.
- Anything else: the fixed defaults of `ServerSettings`.

`--max-concurrency`, `--max-queue` and the `[server]` table override (a `ServerSettings` field set explicitly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_client.generator import Generator
from lightning_client.providers._http.generator import HttpGenerator
from lightning_client.providers._http.rate_limit import RateLimiter
from lightning_client.providers.local import LocalGenerator
from lightning_client.routing.router import Router
from lightning_client.serving.served import Served
from lightning_client.serving.settings import ServerSettings

__all__ = ["HOSTED_IN_FLIGHT", "HOSTED_QUEUE", "EffectiveLimits", "Limit", "effective_limits"]

#: Requests in flight to a hosted provider without a rate limit: enough that the provider's limit binds.
HOSTED_IN_FLIGHT = 1024
#: Requests waiting for a hosted provider without a rate limit.
HOSTED_QUEUE = 1024
#: Seconds of requests at a provider's `requests_per_s` the server queues for it.
RATE_QUEUE_S = 60.0
#: Seconds a hosted job is assumed to take when its provider states no latency prior.
DEFAULT_JOB_S = 2.0
#: Batches a local generator's queue holds.
LOCAL_QUEUE_BATCHES = 16


@dataclass(frozen=True)
class Limit:
    """One admission limit, whether the operator or the served generator set it, and why it has its value."""

    value: int
    source: str  # "operator", "generator" or "default"
    reason: str

    def describe(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class EffectiveLimits:
    """The server's limits in force, and the rate limiters of the hosted providers behind them."""

    max_concurrency: Limit
    max_queue: Limit
    rate_limits: tuple[RateLimiter, ...] = ()

    def describe(self) -> dict[str, Any]:
        """For `/v1/status`: each limit with its source, and each provider's rate limit as it stands now."""
        return {
            "max_concurrency": self.max_concurrency.describe(),
            "max_queue": self.max_queue.describe(),
            "rate_limits": {limiter.provider: limiter.describe() for limiter in self.rate_limits},
        }


def effective_limits(served: Served, settings: ServerSettings) -> EffectiveLimits:
    """The limits `settings` and what is served give together: the operator's where set, else the generator's."""
    concurrency, queue = _from_generator(served.generator)
    chosen = settings.model_fields_set
    if "max_concurrency" in chosen:
        concurrency = Limit(settings.max_concurrency, "operator", "--max-concurrency or [server] max_concurrency")
    if "max_queue" in chosen:
        queue = Limit(settings.max_queue, "operator", "--max-queue or [server] max_queue")
    return EffectiveLimits(concurrency, queue, tuple(_limiters(served.generator)))


def _from_generator(generator: Generator) -> tuple[Limit, Limit]:
    if isinstance(generator, Router):
        members = [_from_generator(g) for g in generator.generators]
        names = ", ".join(g.name for g in generator.generators)
        return (
            Limit(sum(c.value for c, _ in members), "generator", f"sum over the router's members ({names})"),
            Limit(max(q.value for _, q in members), "generator", f"largest queue of the router's members ({names})"),
        )
    if isinstance(generator, LocalGenerator):
        batch = generator.max_batch_size
        return (
            Limit(2 * batch, "generator", f"{generator.name}: 2 batches of max_batch_size={batch}"),
            Limit(LOCAL_QUEUE_BATCHES * batch, "generator", f"{generator.name}: {LOCAL_QUEUE_BATCHES} batches queued"),
        )
    if isinstance(generator, HttpGenerator):
        return _hosted(generator)
    defaults = ServerSettings()
    what = f"{generator.name}: no limits of its own"
    return (
        Limit(defaults.max_concurrency, "default", what + "; the fixed default"),
        Limit(defaults.max_queue, "default", what + "; the fixed default"),
    )


def _hosted(generator: HttpGenerator) -> tuple[Limit, Limit]:
    limiter = generator.rate_limit
    name = generator.name
    in_flight = Limit(HOSTED_IN_FLIGHT, "generator", f"{name}: hosted, no rate limit set")
    queue = Limit(HOSTED_QUEUE, "generator", f"{name}: hosted, no rate limit set")
    rate = limiter.requests_per_s
    if rate is not None:
        job_s = generator.latency_prior_s or DEFAULT_JOB_S
        busy = max(1, math.ceil(rate * job_s))
        if busy < in_flight.value:
            in_flight = Limit(busy, "generator", f"{name}: requests_per_s={rate:g} x {job_s:g} s per job")
        queued = max(1, math.ceil(rate * RATE_QUEUE_S))
        if queued < queue.value:
            queue = Limit(queued, "generator", f"{name}: {RATE_QUEUE_S:g} s of requests at requests_per_s={rate:g}")
    cap = limiter.max_in_flight
    if cap is not None and cap < in_flight.value:
        in_flight = Limit(cap, "generator", f"{name}: max_in_flight={cap}")
    return in_flight, queue


def _limiters(generator: Generator) -> list[RateLimiter]:
    if isinstance(generator, Router):
        return [limiter for g in generator.generators for limiter in _limiters(g)]
    return [generator.rate_limit] if isinstance(generator, HttpGenerator) else []
