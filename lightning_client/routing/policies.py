"""Routing policies and the per-provider statistics they decide on.

`ProviderStats` keeps, per generator, an EWMA and a window of recent total latencies of
successful attempts plus an EWMA of the cost per image. Both start from priors (below)
so a fresh router makes sensible choices before it has observed anything, and move to
what is observed (a reopened ledger seeds them).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from lightning_client.generator import Generator
from lightning_client.ledger import percentile
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt

__all__ = [
    "CheapestPolicy",
    "FastestPolicy",
    "Policy",
    "PriorityPolicy",
    "ProviderStats",
    "Stats",
    "WeightedPolicy",
    "make_policy",
]

#: Prior total latency for a generator that declares none (`latency_prior_s`).
DEFAULT_LATENCY_PRIOR_S = 5.0
#: Smoothing of the EWMAs; the window feeding latency percentiles.
EWMA_ALPHA = 0.2
LATENCY_WINDOW = 512
#: Below this many samples percentiles come from the prior (times `PRIOR_SPREAD` above p50).
MIN_PERCENTILE_SAMPLES = 10
PRIOR_SPREAD = 1.5


def prior_cost_per_image(generator: Generator, prices: PriceTable) -> float | None:
    """Expected dollars per image from prices alone (None: unknown), as the generator declares it.

    Generators price from their own table when they have one; `prices` is the router's.
    """
    prior = getattr(generator, "prior_cost_per_image", None)
    return prior(prices) if callable(prior) else None


def latency_prior_s(generator: Generator) -> float:
    """The generator's declared latency prior (`latency_prior_s`), else `DEFAULT_LATENCY_PRIOR_S`."""
    prior = getattr(generator, "latency_prior_s", None)
    return float(prior) if isinstance(prior, (int, float)) and prior > 0 else DEFAULT_LATENCY_PRIOR_S


class ProviderStats:
    """Observed latency and cost of one provider, starting from priors."""

    def __init__(self, latency_prior_s: float, cost_prior_usd: float | None) -> None:
        self._lock = threading.Lock()
        self.latency_ewma_s = latency_prior_s
        self.latency_prior_s = latency_prior_s
        self.cost_per_image_usd = cost_prior_usd
        self.cost_observed = False
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def observe(self, attempt: Attempt) -> None:
        """Learn from one finished attempt (only successes carry latency and cost per image)."""
        if attempt.outcome != "succeeded":
            return
        with self._lock:
            total = attempt.timings.total_s
            if total is not None:
                if self._latencies:
                    self.latency_ewma_s += EWMA_ALPHA * (total - self.latency_ewma_s)
                else:
                    self.latency_ewma_s = total
                self._latencies.append(total)
            if attempt.num_images and attempt.cost.basis and attempt.cost.usd is not None:
                per_image = attempt.cost.usd / attempt.num_images
                if self.cost_observed and self.cost_per_image_usd is not None:
                    self.cost_per_image_usd += EWMA_ALPHA * (per_image - self.cost_per_image_usd)
                else:
                    self.cost_per_image_usd = per_image
                    self.cost_observed = True

    @property
    def samples(self) -> int:
        return len(self._latencies)

    def latency_percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of recent total latency, or the prior while few are known."""
        with self._lock:
            if len(self._latencies) >= MIN_PERCENTILE_SAMPLES:
                return percentile(list(self._latencies), q)
            return self.latency_prior_s * (1.0 if q <= 50 else PRIOR_SPREAD)


class Stats:
    """`ProviderStats` for every generator of a router, created on first use."""

    def __init__(self, prices: PriceTable = DEFAULT_PRICES) -> None:
        self.prices = prices
        self._lock = threading.Lock()
        self._by_name: dict[str, ProviderStats] = {}

    def for_generator(self, generator: Generator) -> ProviderStats:
        with self._lock:
            stats = self._by_name.get(generator.name)
            if stats is None:
                stats = self._by_name[generator.name] = ProviderStats(
                    latency_prior_s(generator), prior_cost_per_image(generator, self.prices)
                )
            return stats

    def observe(self, generator: Generator, attempt: Attempt) -> None:
        self.for_generator(generator).observe(attempt)

    def cost_per_image(self, generator: Generator) -> float | None:
        return self.for_generator(generator).cost_per_image_usd

    def latency(self, generator: Generator) -> float:
        return self.for_generator(generator).latency_ewma_s


@runtime_checkable
class Policy(Protocol):
    """Decides the order in which a request's eligible generators are tried."""

    name: str

    def order(self, generators: Sequence[Generator], request: GenerationRequest, stats: Stats) -> list[Generator]: ...


class PriorityPolicy:
    """The generators in the order they were given."""

    name = "priority"

    def order(self, generators: Sequence[Generator], request: GenerationRequest, stats: Stats) -> list[Generator]:
        return list(generators)


class CheapestPolicy:
    """Lowest expected cost per image first (observed when known, else from prices); unknown last."""

    name = "cheapest"

    def order(self, generators: Sequence[Generator], request: GenerationRequest, stats: Stats) -> list[Generator]:
        def key(generator: Generator) -> tuple[bool, float]:
            cost = stats.cost_per_image(generator)
            return cost is None, cost or 0.0

        return sorted(generators, key=key)


class FastestPolicy:
    """Lowest expected total latency first (EWMA of observed successes, starting from priors)."""

    name = "fastest"

    def order(self, generators: Sequence[Generator], request: GenerationRequest, stats: Stats) -> list[Generator]:
        return sorted(generators, key=stats.latency)


class WeightedPolicy:
    """Random order drawn by weight (weighted sampling without replacement).

    A generator missing from `weights` weighs 1; weight 0 puts it last (failover only).
    """

    name = "weighted"

    def __init__(self, weights: Mapping[str, float] | None = None, *, seed: int | None = None) -> None:
        self.weights = dict(weights or {})
        for provider, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"weights[{provider!r}] must be >= 0, got {weight}")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def order(self, generators: Sequence[Generator], request: GenerationRequest, stats: Stats) -> list[Generator]:
        with self._lock:
            draws = [self._rng.random() for _ in generators]

        def key(item: tuple[Generator, float]) -> float:
            generator, u = item
            weight = self.weights.get(generator.name, 1.0)
            return u ** (1.0 / weight) if weight > 0 else -1.0

        return [g for g, _ in sorted(zip(generators, draws, strict=True), key=key, reverse=True)]


POLICIES: dict[str, type[Policy]] = {"priority": PriorityPolicy, "cheapest": CheapestPolicy, "fastest": FastestPolicy}


def make_policy(policy: str | Policy, weights: Mapping[str, float] | None = None) -> Policy:
    """A policy from its name ("priority", "cheapest", "fastest", "weighted") or a `Policy` object."""
    if not isinstance(policy, str):
        return policy
    if policy == "weighted":
        return WeightedPolicy(weights)
    try:
        return POLICIES[policy]()
    except KeyError:
        raise ValueError(
            f"policy={policy!r} is not known; use one of 'priority', 'cheapest', 'fastest', 'weighted' "
            "or a Policy object"
        ) from None
