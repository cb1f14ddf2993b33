"""OpenTelemetry spans and metrics for every generation and each of its attempts (the `otel` extra).

Spans follow the GenAI semantic conventions where they exist (`gen_ai.operation.name =
"generate_content"`, `gen_ai.output.type = "image"`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.request.seed`, `gen_ai.response.id`, `error.type`); everything else is under
`lightning_client.`. A generation (one `generate`/`agenerate` of a generator or a router) is one
INTERNAL span; each attempt it makes (failovers and hedges included) is a CLIENT span below it.

This module never imports OpenTelemetry itself: it acts only when the application has imported
`opentelemetry.trace` (or `opentelemetry.metrics`) and set a provider; otherwise each call is a
dictionary lookup. Prompts are recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
is `true`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_client.request import GenerationRequest
    from lightning_client.result import Attempt, GenerationResult

__all__ = [
    "CAPTURE_PROMPTS_ENV",
    "COST_METRIC",
    "DURATION_METRIC",
    "Generation",
    "attempt_span",
    "generation_span",
    "skipped",
    "trace_headers",
    "tracer",
]

#: The GenAI instrumentations' opt-in for recording message content (here: the prompt).
CAPTURE_PROMPTS_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Histogram of each attempt's seconds (GenAI semantic conventions).
DURATION_METRIC = "gen_ai.client.operation.duration"
#: Counter of the known dollars each attempt cost.
COST_METRIC = "lightning_client.cost"
OPERATION = "generate_content"
_SCOPE = "lightning_client"

#: The generation span of the call in progress (a router's attempts join it instead of starting their own).
_current: ContextVar[Generation | None] = ContextVar("lightning_client_generation", default=None)
_tracer_cache: tuple[Any, Any] | None = None
_meter_cache: tuple[Any, Any, Any] | None = None


def tracer() -> Any | None:
    """The `lightning_client` tracer of the application's tracer provider; None when none is set."""
    global _tracer_cache
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    cached = _tracer_cache
    if cached is None or cached[0] is not provider:
        cached = _tracer_cache = (provider, provider.get_tracer(_SCOPE))
    return cached[1]


def _instruments() -> tuple[Any, Any] | None:
    """The duration histogram and cost counter of the application's meter provider; None when none is set."""
    global _meter_cache
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return None
    provider = metrics.get_meter_provider()
    # The API's stand-in before a provider is set is private (`_ProxyMeterProvider`): known by name.
    if isinstance(provider, metrics.NoOpMeterProvider) or type(provider).__name__ == "_ProxyMeterProvider":
        return None
    cached = _meter_cache
    if cached is None or cached[0] is not provider:
        meter = provider.get_meter(_SCOPE)
        duration = meter.create_histogram(DURATION_METRIC, unit="s", description="Seconds of each attempt")
        cost = meter.create_counter(COST_METRIC, unit="USD", description="Known dollars each attempt cost")
        cached = _meter_cache = (provider, duration, cost)
    return cached[1], cached[2]


class Generation:
    """The span of one generation; `finish(result)` adds what the result tells."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def finish(self, result: GenerationResult) -> None:
        """Record the provider that served, its remote id, images, seed, timings and total cost."""
        values: dict[str, Any] = {
            "gen_ai.provider.name": result.provider,
            "gen_ai.response.model": result.model,
            "gen_ai.response.id": result.request_id,
            "lightning_client.outcome": "succeeded",
            "lightning_client.images": len(result.images),
            "lightning_client.seed": result.seed,
            "lightning_client.attempts": len(result.attempts),
            **_cost(result.cost),
            **_timings(result.timings.model_dump()),
        }
        self.span.set_attributes(_present(values))


@contextlib.contextmanager
def generation_span(name: str, model: str | None, request: GenerationRequest) -> Iterator[Generation | None]:
    """The span of one generation by `name`; None when not traced.

    `model`: the generator's model; None for a router (its provider and model are known once one
    serves). Inside another generation (a generator called by a router) it yields None: the
    attempt belongs to the router's generation.
    """
    if _current.get() is not None:
        yield None
        return
    found = tracer()
    if found is None:
        yield None
        return
    from opentelemetry import context, trace

    values = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.output.type": "image",
        "lightning_client.generator": name,
        **_request_values(request),
    }
    if model is not None:  # one generator: its provider and model are known now
        values["gen_ai.provider.name"] = name
        if model:
            values["gen_ai.request.model"] = model
    if os.environ.get(CAPTURE_PROMPTS_ENV, "").strip().lower() == "true":
        values["gen_ai.input.messages"] = json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": request.prompt}]}]
        )
    span = found.start_span(f"{OPERATION} {model or name}", kind=trace.SpanKind.INTERNAL, attributes=values)
    handle = Generation(span)
    token = context.attach(trace.set_span_in_context(span))
    mine = _current.set(handle)
    try:
        yield handle
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        _current.reset(mine)
        context.detach(token)
        span.end()


@contextlib.contextmanager
def attempt_span(attempt: Attempt, request: GenerationRequest) -> Iterator[None]:
    """The CLIENT span (and metrics) of one attempt; `attempt` is read when it ends."""
    found = tracer()
    instruments = _instruments()
    if found is None and instruments is None:
        yield
        return
    span: Any = None
    token: Any = None
    if found is not None:
        from opentelemetry import context, trace

        values = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.output.type": "image",
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.request.model": attempt.model,
            "lightning_client.attempt_id": attempt.attempt_id,
            **_request_values(request),
        }
        span = found.start_span(
            f"{OPERATION} {attempt.model or attempt.provider}", kind=trace.SpanKind.CLIENT, attributes=_present(values)
        )
        token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        if span is not None:
            context.detach(token)
            _end_attempt(span, attempt)
        if instruments is not None:
            _measure(instruments, attempt)


def skipped(attempt: Attempt) -> None:
    """Note a generator the router skipped (breaker open, busy, cannot serve) on the current generation span."""
    handle = _current.get()
    if handle is not None:
        handle.span.add_event(
            "lightning_client.skipped",
            {"gen_ai.provider.name": attempt.provider, "lightning_client.note": attempt.note or ""},
        )


def trace_headers() -> dict[str, str]:
    """W3C trace context headers (`traceparent`) of the current span; empty when not traced."""
    if tracer() is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _request_values(request: GenerationRequest) -> dict[str, Any]:
    return _present(
        {
            "gen_ai.request.seed": request.seed,
            "lightning_client.steps": request.steps,
            "lightning_client.width": request.width,
            "lightning_client.height": request.height,
            "lightning_client.aspect_ratio": request.aspect_ratio,
            "lightning_client.num_images": request.num_images,
            "lightning_client.output_format": request.output_format,
        }
    )


def _end_attempt(span: Any, attempt: Attempt) -> None:
    from opentelemetry.trace import Status, StatusCode

    values: dict[str, Any] = {
        "gen_ai.response.id": attempt.request_id,
        "error.type": attempt.error_type,
        "http.response.status_code": attempt.status_code,
        "lightning_client.outcome": attempt.outcome,
        "lightning_client.hedge": attempt.hedge,
        "lightning_client.note": attempt.note,
        "lightning_client.images": attempt.num_images,
        "lightning_client.seed": attempt.seed,
        "lightning_client.remote_ids": list(attempt.remote_ids) or None,
        "lightning_client.read_retries": attempt.read_retries or None,
        **_cost(attempt.cost),
        **_timings(attempt.timings.model_dump()),
    }
    span.set_attributes(_present(values))
    if attempt.outcome in ("failed", "unknown"):
        span.set_status(Status(StatusCode.ERROR, attempt.error_message or attempt.error_type or attempt.outcome))
    span.end()


def _measure(instruments: tuple[Any, Any], attempt: Attempt) -> None:
    duration, cost = instruments
    labels = _present(
        {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.request.model": attempt.model,
            "lightning_client.outcome": attempt.outcome,
            "error.type": attempt.error_type,
        }
    )
    if attempt.timings.total_s is not None:
        duration.record(attempt.timings.total_s, labels)
    labels["lightning_client.cost_estimated"] = attempt.cost.estimated
    labels["lightning_client.cost_unknown"] = attempt.cost.is_unknown
    cost.add(attempt.cost.known_usd, labels)


def _cost(cost: Any) -> dict[str, Any]:
    # An unknown cost has no `cost_usd` (never $0): `cost_unknown` says so, `cost_basis` says why.
    return {
        "lightning_client.cost_usd": cost.usd,
        "lightning_client.cost_basis": cost.basis or None,
        "lightning_client.cost_estimated": cost.estimated,
        "lightning_client.cost_unknown": cost.is_unknown,
    }


def _timings(phases: dict[str, float | None]) -> dict[str, Any]:
    return {f"lightning_client.{phase}": seconds for phase, seconds in phases.items()}


def _record_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, Exception):
        span.set_attributes({"error.type": type(exc).__name__, "lightning_client.outcome": "failed"})
        span.set_status(Status(StatusCode.ERROR, str(getattr(exc, "message", exc))))
    else:  # cancelled: not an error of the generation
        span.set_attribute("lightning_client.outcome", "canceled")


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
