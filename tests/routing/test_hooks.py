"""Attempt hooks and OpenTelemetry spans, driven by real generators against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import lightning_client as lc
from lightning_client.generator import AttemptEvent
from lightning_client.result import Attempt
from lightning_client.routing import Hooks, OpenTelemetryHook
from lightning_client.routing.hooks import default_hooks, otel_available
from lightning_client.testing import Sandbox

SMALL: dict[str, Any] = {"width": 256, "height": 256}


def test_hooks_see_start_job_and_end_of_every_attempt(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(error_status=409)
    events: list[tuple[AttemptEvent, str, str | None]] = []

    def hook(event: AttemptEvent, attempt: Attempt) -> None:
        events.append((event, attempt.provider, attempt.outcome))

    router = lc.Router([rep, fal], hooks=hook)
    router.generate("x", **SMALL)
    router.generate("x", steps=2, allow_emulation=False, **SMALL)
    assert events == [
        ("start", "replicate", None),
        ("end", "replicate", "failed"),
        ("start", "fal", None),
        ("job", "fal", None),
        ("end", "fal", "succeeded"),
        ("end", "replicate", "skipped"),
        ("start", "fal", None),
        ("job", "fal", None),
        ("end", "fal", "succeeded"),
    ]


def test_a_failing_hook_never_breaks_generation(
    sb: Sandbox, fal: lc.FalGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[str] = []

    def broken(attempt: Attempt) -> None:
        raise RuntimeError("hook bug")

    router = lc.Router([fal], hooks=[Hooks(on_start=broken), Hooks(on_end=lambda a: ended.append(a.provider))])
    assert router.generate("x", **SMALL).provider == "fal"
    assert ended == ["fal"] and "attempt hook" in caplog.text


async def test_opentelemetry_spans_per_attempt_under_the_callers_span(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sb.replicate.configure(error_status=503)
    router = lc.Router([rep, fal], hooks=[OpenTelemetryHook(tracer_provider=provider)])
    with provider.get_tracer("app").start_as_current_span("handle request") as parent:
        result = await router.agenerate("x", **SMALL)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    failed, served = spans["lightning_client.attempt replicate"], spans["lightning_client.attempt fal"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["http.response.status_code"] == 503
    assert served.attributes is not None
    assert served.attributes["lightning_client.remote_id"] == result.request_id
    assert served.attributes["lightning_client.outcome"] == "succeeded"
    assert served.attributes["lightning_client.cost_usd"] == pytest.approx(0.002)
    assert all(s.parent is not None and s.parent.span_id == parent.get_span_context().span_id for s in (failed, served))
    await router.aclose()


def test_default_hooks_trace_when_opentelemetry_is_installed() -> None:
    assert otel_available()
    assert [type(h) for h in default_hooks()] == [OpenTelemetryHook]
