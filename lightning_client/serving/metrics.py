"""`ServerMetrics`: the Prometheus series of one app, in its own registry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from lightning_client.generator import Generator
from lightning_client.result import Attempt, GenerationResult

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 10)


class ServerMetrics:
    """Requests by outcome, latency by phase, queue depth, batch sizes and cost (unknown counted apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lightning_requests",
            "Generation requests by route and outcome.",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lightning_request_seconds",
            "Seconds per generation request, by phase (server_queue, queue, load, inference, download, total).",
            ["phase"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("lightning_queue_depth", "Requests waiting for a slot.", registry=self.registry)
        self.in_flight = Gauge("lightning_in_flight", "Requests being generated.", registry=self.registry)
        self.batch_size = Histogram(
            "lightning_batch_size",
            "Images per generation request (pipeline batches: lightning_pipeline_calls_total).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "lightning_cost_usd", "Dollars spent on attempts with a known cost.", ["provider"], registry=self.registry
        )
        self.cost_unknown = Counter(
            "lightning_cost_unknown_attempts",
            "Attempts whose cost is unknown (never counted as $0).",
            ["provider"],
            registry=self.registry,
        )

    def watch(self, generators: Sequence[Generator]) -> None:
        """Export `pipeline_calls` of generators that batch (images / calls is the mean batch size)."""
        batching = [g for g in generators if isinstance(getattr(g, "pipeline_calls", None), int)]
        if batching:
            self.registry.register(_PipelineCalls(batching))

    def observe_result(self, result: GenerationResult, server_queue_s: float) -> None:
        """Phases, images and every attempt's cost of one served request."""
        self.latency.labels("server_queue").observe(server_queue_s)
        for phase, value in result.timings.model_dump().items():
            if isinstance(value, (int, float)):
                self.latency.labels(phase.removesuffix("_s")).observe(value)
        self.batch_size.observe(len(result.images))
        self.observe_costs(result.attempts)

    def observe_costs(self, attempts: list[Attempt]) -> None:
        """Count every attempt's cost; an unknown one (no dollar figure) goes to its own series."""
        for attempt in attempts:
            if attempt.outcome == "skipped":
                continue
            usd: float | None = attempt.cost.usd
            if usd is None:
                self.cost_unknown.labels(attempt.provider).inc()
            else:
                self.cost.labels(attempt.provider).inc(usd)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PipelineCalls(Collector):
    """`lightning_pipeline_calls_total{generator}`, read from the generators at each scrape."""

    def __init__(self, generators: Sequence[Generator]) -> None:
        self._generators = list(generators)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "lightning_pipeline_calls",
            "Pipeline calls run (a batch of concurrent requests is one).",
            labels=["generator"],
        )
        for generator in self._generators:
            family.add_metric([generator.name], float(getattr(generator, "pipeline_calls", 0)))
        yield family
