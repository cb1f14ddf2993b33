"""The application's OpenTelemetry providers for these tests: in-memory spans and metrics.

A global tracer or meter provider can be set once per process, so both are set for the session;
spans are kept only while a test holds the `spans` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import lightning_client as lc
from lightning_client.testing import Sandbox


class _WhileCapturing(SpanProcessor):
    """Passes finished spans on only while a test captures them."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.capturing = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return

    def on_end(self, span: ReadableSpan) -> None:
        if self.capturing:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


_exporter = InMemorySpanExporter()
_gate = _WhileCapturing(SimpleSpanProcessor(_exporter))
_reader = InMemoryMetricReader()


@pytest.fixture(scope="session")
def providers() -> tuple[TracerProvider, InMemoryMetricReader]:
    """The process's tracer provider and the reader of its meter provider (set once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_gate)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))
    return provider, _reader


@pytest.fixture
def spans(providers: Any) -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test."""
    _exporter.clear()
    _gate.capturing = True
    try:
        yield _exporter
    finally:
        _gate.capturing = False
        _exporter.clear()


@pytest.fixture
def reader(providers: tuple[TracerProvider, InMemoryMetricReader]) -> InMemoryMetricReader:
    return providers[1]


@pytest.fixture
def sb(lightning_sandbox: Sandbox) -> Sandbox:
    lightning_sandbox.replicate.reset()
    lightning_sandbox.fal.reset()
    return lightning_sandbox


@pytest.fixture
def rep(sb: Sandbox) -> Iterator[lc.ReplicateGenerator]:
    generator = lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url)
    yield generator
    generator.close()


@pytest.fixture
def fal(sb: Sandbox) -> Iterator[lc.FalGenerator]:
    generator = lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)
    yield generator
    generator.close()
