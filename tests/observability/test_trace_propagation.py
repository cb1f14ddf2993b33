"""A client span around `RemoteGenerator.generate` and the spans `lightning-client serve` prints share one trace."""

from __future__ import annotations

import json
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lightning_client as lc
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.tracing import TraceContextMiddleware
from tests.serving.conftest import start_serve


def _printed_spans(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter printed (one per span, several lines each)."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (start := stdout.find("{", at)) != -1:
        try:
            value, at = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        if isinstance(value, dict) and "context" in value:
            found.append(value)
    return found


def test_the_server_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    server = start_serve("--sandbox", "--api-key", "k", env={"OTEL_TRACES_EXPORTER": "console"})
    try:
        remote = lc.RemoteGenerator(server.url, api_key="k")
        with trace.get_tracer("app").start_as_current_span("client request") as parent:
            result = remote.generate("x", width=256, height=256)
        remote.close()
    finally:
        server.stop()
    assert server.process.stdout is not None
    printed = _printed_spans(server.process.stdout.read())
    trace_id = f"0x{parent.get_span_context().trace_id:032x}"
    assert printed and {s["context"]["trace_id"] for s in printed} == {trace_id}
    served = next(s for s in printed if s["kind"] == "SpanKind.SERVER" and s["name"] == "POST /v1/generations")
    assert served["attributes"]["http.response.status_code"] == 200
    attempt = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert served["parent_id"] == f"0x{attempt.context.span_id:016x}"  # the client's attempt span
    generation = next(s for s in printed if s["attributes"].get("lightning_client.generator") == "router")
    assert generation["attributes"]["gen_ai.response.id"] in (result.attempts[0].note or "")
    upstream = [s for s in printed if s["kind"] == "SpanKind.CLIENT"]
    assert upstream and all(s["parent_id"] == generation["context"]["span_id"] for s in upstream)


def test_the_middleware_continues_the_trace_where_fastapi_does_not(spans: InMemorySpanExporter) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = TraceContextMiddleware(Starlette(routes=[Route("/hello/{name}", hello)]))
    with trace.get_tracer("app").start_as_current_span("caller") as parent, ServerThread(app) as url:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert httpx.get(f"{url}/hello/you", headers=carrier).text == "hi"
    served = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert served.name == "GET /hello/{name}" and served.parent is not None
    assert served.parent.span_id == parent.get_span_context().span_id
    assert served.context.trace_id == parent.get_span_context().trace_id
    assert served.attributes is not None and served.attributes["http.response.status_code"] == 200
