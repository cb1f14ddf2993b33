"""`ServerMetrics`: the Prometheus series of one app, in its own registry.

Costs are counted from attempt events (`observe_attempt`, an `observe_attempts` callback), so every
attempt made for the server counts: succeeded, failed, cancelled, abandoned on a disconnect, and
realtime jobs, including cost that arrives after an attempt ended. `StatusClasses` counts every
HTTP answer by its status class.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from lightning_client.generator import AttemptEvent
from lightning_client.result import Attempt, GenerationResult
from lightning_client.serving.served import Batching

__all__ = ["ServerMetrics", "StatusClasses"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 10)
#: Ended attempts whose counted cost is remembered, so a later "update" adds only what is new.
_REMEMBERED = 10_000


class ServerMetrics:
    """Requests by outcome, answers by status class, latency by phase, queue depth, batch sizes and cost."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lightning_requests",
            "Generation requests by route and outcome.",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.responses = Counter(
            "lightning_http_responses",
            "HTTP answers by status class (2xx, 3xx, 4xx, 5xx).",
            ["status_class"],
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
            "lightning_cost_usd",
            "Dollars of every attempt's known cost (succeeded, failed, cancelled, realtime).",
            ["provider"],
            registry=self.registry,
        )
        self.cost_unknown = Counter(
            "lightning_cost_unknown_attempts",
            "Attempts whose cost is unknown (never counted as $0); their known part is in lightning_cost_usd.",
            ["provider"],
            registry=self.registry,
        )
        self._counted: OrderedDict[str, tuple[float, bool]] = OrderedDict()

    def watch(self, generators: Sequence[Batching]) -> None:
        """Export the `pipeline_calls` of generators that batch (images / calls is the mean batch size)."""
        if generators:
            self.registry.register(_PipelineCalls(generators))

    def observe_result(self, result: GenerationResult, server_queue_s: float) -> None:
        """Phases and images of one served request (its costs come from `observe_attempt`)."""
        self.latency.labels("server_queue").observe(server_queue_s)
        for phase, value in result.timings.model_dump().items():
            if isinstance(value, (int, float)):
                self.latency.labels(phase.removesuffix("_s")).observe(value)
        self.batch_size.observe(len(result.images))

    def observe_attempt(self, event: AttemptEvent, attempt: Attempt) -> None:
        """Count an attempt's cost when it ends, and what an "update" adds to it later."""
        if event not in ("end", "update") or attempt.outcome == "skipped":
            return
        known, unknown = attempt.cost.known_usd, attempt.cost.is_unknown
        before_known, before_unknown = self._counted.pop(attempt.attempt_id, (0.0, False))
        if known > before_known:
            self.cost.labels(attempt.provider).inc(known - before_known)
        if unknown and not before_unknown:
            self.cost_unknown.labels(attempt.provider).inc()
        self._counted[attempt.attempt_id] = (max(known, before_known), unknown or before_unknown)
        while len(self._counted) > _REMEMBERED:
            self._counted.popitem(last=False)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StatusClasses:
    """ASGI middleware: counts every HTTP answer in `metrics.responses` by status class."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(f"{int(message['status']) // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, counting)


class _PipelineCalls(Collector):
    """`lightning_pipeline_calls_total{generator}`, read from the generators at each scrape."""

    def __init__(self, generators: Sequence[Batching]) -> None:
        self._generators = list(generators)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "lightning_pipeline_calls",
            "Pipeline calls run (a batch of concurrent requests is one).",
            labels=["generator"],
        )
        for generator in self._generators:
            family.add_metric([generator.name], float(generator.pipeline_calls))
        yield family
