"""Generation and attempt spans, and the metrics, from real generators against the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import lightning_client as lc
from lightning_client.telemetry import CAPTURE_PROMPTS_ENV, COST_METRIC, DURATION_METRIC
from lightning_client.testing import Sandbox

SMALL: dict[str, Any] = {"width": 256, "height": 256}


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


def _split(spans: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    finished = spans.get_finished_spans()
    generations = [s for s in finished if s.kind is SpanKind.INTERNAL and "lightning_client.generator" in _attrs(s)]
    assert len(generations) == 1, [s.name for s in finished]
    generation = generations[0]
    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert all(s.parent is not None and s.parent.span_id == generation.context.span_id for s in attempts)
    return generation, sorted(attempts, key=lambda s: s.start_time or 0)


def test_failover_is_one_generation_span_with_an_attempt_span_per_try(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator, spans: InMemorySpanExporter
) -> None:
    sb.replicate.configure(fault="job_error")
    router = lc.Router([rep, fal], retries=0)
    result = router.generate("a lighthouse", seed=7, **SMALL)
    generation, attempts = _split(spans)
    assert len(attempts) == 2
    failed, served = (_attrs(s) for s in attempts)
    assert all(_attrs(s)["gen_ai.operation.name"] == "generate_content" for s in (generation, *attempts))
    assert all(_attrs(s)["gen_ai.output.type"] == "image" for s in (generation, *attempts))
    assert failed["gen_ai.provider.name"] == "replicate" and failed["error.type"] == result.attempts[0].error_type
    assert failed["gen_ai.response.id"] == result.attempts[0].request_id is not None
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert served["gen_ai.provider.name"] == "fal" and "error.type" not in served
    assert served["lightning_client.cost_usd"] == pytest.approx(result.attempts[-1].cost.usd)
    assert served["lightning_client.cost_usd"] > 0 and served["lightning_client.cost_basis"]
    assert served["gen_ai.response.id"] == result.request_id
    assert served["gen_ai.request.model"] == fal.model and served["gen_ai.request.seed"] == 7
    assert served["lightning_client.steps"] == 4 and served["lightning_client.width"] == 256
    assert served["lightning_client.outcome"] == "succeeded" and served["lightning_client.total_s"] > 0
    gen = _attrs(generation)
    assert gen["gen_ai.provider.name"] == "fal" and gen["gen_ai.response.id"] == result.request_id
    assert gen["lightning_client.cost_usd"] == pytest.approx(result.cost.usd)
    assert "gen_ai.input.messages" not in gen  # prompts only when opted in
    assert not any("lighthouse" in str(v) for s in spans.get_finished_spans() for v in _attrs(s).values())
    router.close()


def test_a_generator_alone_gives_the_same_spans(fal: lc.FalGenerator, spans: InMemorySpanExporter) -> None:
    result = fal.generate("x", **SMALL)
    generation, attempts = _split(spans)
    assert len(attempts) == 1
    assert _attrs(generation)["gen_ai.request.model"] == fal.model
    assert _attrs(generation)["gen_ai.provider.name"] == "fal"
    assert _attrs(attempts[0])["gen_ai.response.id"] == result.request_id


async def test_spans_join_the_callers_span_and_record_hedges(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator, spans: InMemorySpanExporter
) -> None:
    sb.replicate.configure(inference_s=30.0)  # the loser, cancelled once fal wins
    router = lc.Router([rep, fal], hedge=0.05, retries=0)
    with trace.get_tracer("app").start_as_current_span("handle request") as parent:
        await router.agenerate("x", providers=["replicate", "fal"], **SMALL)
    await router.drain()
    generation, attempts = _split(spans)
    assert generation.parent is not None and generation.parent.span_id == parent.get_span_context().span_id
    by_provider = {_attrs(s)["gen_ai.provider.name"]: _attrs(s) for s in attempts}
    assert by_provider["fal"]["lightning_client.hedge"] is True
    assert by_provider["replicate"]["lightning_client.outcome"] == "canceled"
    await router.aclose()


def test_a_refused_request_is_a_generation_span_with_its_error(
    rep: lc.ReplicateGenerator, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(lc.InvalidRequestError):
        rep.generate("x", steps=2, allow_emulation=False, **SMALL)
    generation, attempts = _split(spans)
    assert attempts == [] and _attrs(generation)["error.type"] == "InvalidRequestError"
    assert generation.status.status_code is StatusCode.ERROR


def test_prompts_are_recorded_when_opted_in(
    fal: lc.FalGenerator, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_PROMPTS_ENV, "true")
    fal.generate("a red fox", **SMALL)
    generation, _ = _split(spans)
    messages = json.loads(_attrs(generation)["gen_ai.input.messages"])
    assert messages == [{"role": "user", "parts": [{"type": "text", "content": "a red fox"}]}]


def _points(reader: InMemoryMetricReader, name: str, provider: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if point.attributes.get("gen_ai.provider.name") == provider
    ]


def test_duration_histogram_and_cost_counter_per_attempt(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator, reader: InMemoryMetricReader
) -> None:
    before = sum(p.value for p in _points(reader, COST_METRIC, "fal"))
    sb.replicate.configure(error_status=504)
    router = lc.Router([rep, fal], retries=0)
    result = router.generate("x", **SMALL)
    assert result.attempts[0].outcome == "unknown"
    failed = _points(reader, DURATION_METRIC, "replicate")
    assert any(p.attributes["lightning_client.outcome"] == "unknown" and p.attributes["error.type"] for p in failed)
    served = [
        p for p in _points(reader, DURATION_METRIC, "fal") if p.attributes["lightning_client.outcome"] == "succeeded"
    ]
    assert served and served[0].attributes["gen_ai.request.model"] == fal.model and served[0].sum > 0
    spent = sum(p.value for p in _points(reader, COST_METRIC, "fal")) - before
    assert spent == pytest.approx(result.attempts[-1].cost.usd)
    # The 504 on the create may hide a job: its cost is unknown, never counted as $0.
    assert result.cost.usd is None
    assert any(p.attributes["lightning_client.cost_unknown"] for p in _points(reader, COST_METRIC, "replicate"))
    router.close()


def test_a_skipped_provider_is_an_event_on_the_generation_span(
    rep: lc.ReplicateGenerator, fal: lc.FalGenerator, spans: InMemorySpanExporter
) -> None:
    router = lc.Router([rep, fal])
    router.generate("x", steps=2, allow_emulation=False, **SMALL)  # Replicate's model runs 4 steps only
    generation, attempts = _split(spans)
    assert [_attrs(s)["gen_ai.provider.name"] for s in attempts] == ["fal"]
    (event,) = generation.events
    assert event.name == "lightning_client.skipped" and event.attributes is not None
    assert event.attributes["gen_ai.provider.name"] == "replicate"
    assert "cannot serve" in str(event.attributes["lightning_client.note"])
    router.close()
