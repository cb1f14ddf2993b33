"""Policy ordering and the statistics behind it (no HTTP: pure math on recorded attempts)."""

from __future__ import annotations

from collections import Counter

import pytest

from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.registry import generator_class
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, Cost, GenerationResult, Timings
from lightning_client.routing.policies import (
    DEFAULT_LATENCY_PRIOR_S,
    CheapestPolicy,
    FastestPolicy,
    PriorityPolicy,
    ProviderStats,
    Stats,
    WeightedPolicy,
    latency_prior_s,
    make_policy,
    prior_cost_per_image,
)


class Named(BaseGenerator):
    """A generator that is only ever ordered, never called."""

    def __init__(self, name: str, model: str = "") -> None:
        self.name = name
        self.model = model

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        raise AssertionError("policies never generate")


REQ = GenerationRequest(prompt="a cat")


def success(provider: str, total: float, usd: float = 0.0, images: int = 1) -> Attempt:
    return Attempt(
        provider=provider,
        outcome="succeeded",
        timings=Timings(total_s=total),
        cost=Cost(usd=usd, basis="billed" if usd else ""),
        num_images=images,
    )


def hosted(kind: str) -> BaseGenerator:
    """A real provider generator (constructing one sends nothing), keyed so it never reads the environment."""
    cls = generator_class(kind)
    return cls() if kind == "local" else cls(api_key="k:k")


def test_priors_are_declared_by_the_provider_classes() -> None:
    rate = DEFAULT_PRICES.replicate_rate("bytedance/sdxl-lightning-4step")[1].usd
    assert prior_cost_per_image(hosted("replicate"), DEFAULT_PRICES) == pytest.approx(rate * 1.63)
    assert prior_cost_per_image(hosted("fal"), DEFAULT_PRICES) == pytest.approx(0.002)
    assert prior_cost_per_image(hosted("local"), DEFAULT_PRICES) == pytest.approx(5.49 / 3600)
    # A name alone carries no prior: only what the class declares counts.
    assert prior_cost_per_image(Named("replicate"), DEFAULT_PRICES) is None
    assert latency_prior_s(Named("fal")) == DEFAULT_LATENCY_PRIOR_S
    assert latency_prior_s(hosted("fal")) == 1.5


class Priced(Named):
    """A generator with declared priors, as a provider class declares them."""

    def __init__(self, name: str, usd: float | None, latency_s: float | None = None) -> None:
        super().__init__(name)
        self._usd = usd
        self.latency_prior_s = latency_s  # type: ignore[misc]

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        return self._usd


def test_cheapest_uses_priors_then_observed_cost_and_puts_unknown_last() -> None:
    rep, fal, other = Priced("replicate", 0.00159), Priced("fal", 0.002), Named("mystery")
    stats = Stats()
    policy = CheapestPolicy()
    # priors: replicate 1.63 s x L40S $0.000975/s = $0.00159 < fal $0.002
    assert [g.name for g in policy.order([other, fal, rep], REQ, stats)] == ["replicate", "fal", "mystery"]
    stats.observe(rep, success("replicate", 2.0, usd=0.012, images=2))  # $0.006 per image observed
    assert [g.name for g in policy.order([rep, fal], REQ, stats)] == ["fal", "replicate"]
    assert stats.cost_per_image(rep) == pytest.approx(0.006)


def test_fastest_follows_the_latency_ewma() -> None:
    rep, fal = Priced("replicate", None, 2.6), Priced("fal", None, 1.5)
    stats = Stats()
    assert [g.name for g in FastestPolicy().order([rep, fal], REQ, stats)] == ["fal", "replicate"]  # priors
    for _ in range(3):
        stats.observe(fal, success("fal", 5.0))
        stats.observe(rep, success("replicate", 1.0))
    assert [g.name for g in FastestPolicy().order([fal, rep], REQ, stats)] == ["replicate", "fal"]


def test_failed_attempts_do_not_move_latency_or_cost() -> None:
    stats = ProviderStats(latency_prior_s=2.0, cost_prior_usd=0.01)
    stats.observe(Attempt(provider="x", outcome="failed", timings=Timings(total_s=60.0), cost=Cost(usd=1, basis="b")))
    assert stats.latency_ewma_s == 2.0 and stats.cost_per_image_usd == 0.01 and stats.samples == 0


def test_percentiles_use_the_prior_until_enough_samples() -> None:
    stats = ProviderStats(latency_prior_s=2.0, cost_prior_usd=None)
    assert stats.latency_percentile(50) == 2.0
    assert stats.latency_percentile(90) == 3.0
    for i in range(1, 11):
        stats.observe(success("x", float(i)))
    assert stats.latency_percentile(50) == pytest.approx(5.5)
    assert stats.latency_percentile(90) == pytest.approx(9.1)


def test_weighted_draws_in_proportion_to_weights() -> None:
    a, b, c = Named("a"), Named("b"), Named("c")
    policy = WeightedPolicy({"a": 3.0, "b": 1.0, "c": 0.0}, seed=1)
    firsts = Counter(policy.order([a, b, c], REQ, Stats())[0].name for _ in range(4000))
    assert firsts["c"] == 0
    assert 0.70 < firsts["a"] / 4000 < 0.80
    assert policy.order([a, b, c], REQ, Stats())[-1].name == "c"


def test_make_policy_names_and_errors() -> None:
    assert isinstance(make_policy("priority"), PriorityPolicy)
    assert make_policy("weighted", {"a": 2}).name == "weighted"
    with pytest.raises(ValueError, match="'priority', 'cheapest', 'fastest', 'weighted'"):
        make_policy("random")
    with pytest.raises(ValueError, match=r"weights\['a'\] must be >= 0"):
        WeightedPolicy({"a": -1})
