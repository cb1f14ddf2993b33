"""Callbacks on attempt start and end, and OpenTelemetry spans when the package is installed.

A hook is any callable `hook(event, attempt)` with event "start", "job" (the remote id is
known) or "end"; skipped generators produce a single "end" with `outcome="skipped"`.
Hooks run inline in the attempt's task: keep them quick. A hook that raises is logged
and ignored, never breaking a generation.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterable
from typing import Any

from lightning_client.credentials import get_logger
from lightning_client.generator import AttemptEvent
from lightning_client.result import Attempt

__all__ = ["AttemptHook", "Hooks", "OpenTelemetryHook", "default_hooks", "otel_available"]

logger = get_logger("lightning_client")

AttemptHook = Callable[[AttemptEvent, Attempt], None]


class Hooks:
    """Adapts separate `on_start` / `on_job` / `on_end` callables to one hook."""

    def __init__(
        self,
        *,
        on_start: Callable[[Attempt], None] | None = None,
        on_job: Callable[[Attempt], None] | None = None,
        on_end: Callable[[Attempt], None] | None = None,
    ) -> None:
        self._by_event = {"start": on_start, "job": on_job, "end": on_end}

    def __call__(self, event: AttemptEvent, attempt: Attempt) -> None:
        callback = self._by_event.get(event)
        if callback is not None:
            callback(attempt)


def otel_available() -> bool:
    """Whether `opentelemetry` (the `otel` extra) can be imported."""
    return importlib.util.find_spec("opentelemetry") is not None


class OpenTelemetryHook:
    """One CLIENT span per attempt, a child of whatever span is current when it starts.

    Attributes: provider, model, steps, seed, remote id, outcome, error type and status,
    queue/inference/download/total seconds, cost in USD and whether it is estimated.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("lightning_client", tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        self._spans: dict[str, Any] = {}

    def __call__(self, event: AttemptEvent, attempt: Attempt) -> None:
        span: Any
        if event == "start":
            span = self._tracer.start_span(
                f"lightning_client.attempt {attempt.provider}",
                kind=self._trace.SpanKind.CLIENT,
                attributes=self._attributes(attempt),
            )
            with self._lock:
                self._spans[attempt.attempt_id] = span
            return
        with self._lock:
            span = self._spans.get(attempt.attempt_id) if event == "job" else self._spans.pop(attempt.attempt_id, None)
        if span is None:
            if event != "end":
                return
            span = self._tracer.start_span(
                f"lightning_client.attempt {attempt.provider}", kind=self._trace.SpanKind.CLIENT
            )
        span.set_attributes(self._attributes(attempt))
        if event == "end":
            if attempt.outcome in ("failed", "unknown"):
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, attempt.error_type or "failed"))
            span.end()

    @staticmethod
    def _attributes(attempt: Attempt) -> dict[str, Any]:
        values: dict[str, Any] = {
            "lightning_client.provider": attempt.provider,
            "lightning_client.model": attempt.model,
            "lightning_client.steps": attempt.steps,
            "lightning_client.seed": attempt.seed,
            "lightning_client.remote_id": attempt.request_id,
            "lightning_client.hedge": attempt.hedge,
            "lightning_client.outcome": attempt.outcome,
            "lightning_client.note": attempt.note,
            "lightning_client.error_type": attempt.error_type,
            "http.response.status_code": attempt.status_code,
            "lightning_client.num_images": attempt.num_images,
            "lightning_client.cost_usd": attempt.cost.usd if attempt.outcome else None,  # absent: unknown
            "lightning_client.cost_unknown": attempt.cost.is_unknown if attempt.outcome else None,
            "lightning_client.cost_estimated": attempt.cost.estimated if attempt.outcome else None,
        }
        for phase, seconds in attempt.timings.model_dump().items():
            values[f"lightning_client.{phase}"] = seconds
        return {key: value for key, value in values.items() if value is not None}


def default_hooks() -> list[AttemptHook]:
    """Hooks a router gets when none are given: OpenTelemetry spans if it is installed."""
    return [OpenTelemetryHook()] if otel_available() else []


def as_hooks(hooks: AttemptHook | Iterable[AttemptHook] | None) -> list[AttemptHook]:
    """Normalize a router's `hooks=` argument (None: `default_hooks()`)."""
    if hooks is None:
        return default_hooks()
    if callable(hooks):
        return [hooks]
    return list(hooks)


def dispatch(hooks: Iterable[AttemptHook], event: AttemptEvent, attempt: Attempt) -> None:
    """Call every hook; one that raises is logged and skipped."""
    for hook in hooks:
        try:
            hook(event, attempt)
        except Exception:  # a hook must never break a generation
            logger.exception("attempt hook %r failed on %s", hook, event)
