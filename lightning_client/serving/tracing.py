"""Trace continuation: each HTTP request is a SERVER span that continues the caller's W3C trace context.

A `RemoteGenerator` (or any client) sends `traceparent`; the generation the server runs, and its
attempts, become children of this span, so client and server share one trace id. Without a tracer
provider set (see `lightning_client.serving.otel_sdk`), or when FastAPI's own telemetry (recent
releases) has already opened the request's span, requests pass through untouched.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightning_client import telemetry

__all__ = ["TraceContextMiddleware"]


class TraceContextMiddleware:
    """ASGI middleware: a SERVER span per HTTP request, child of the incoming trace context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI releases with built-in telemetry already made this span (they mark the scope).
        traced = scope["type"] != "http" or "fastapi.telemetry" in scope
        found = None if traced else telemetry.tracer()
        if found is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        method = scope.get("method", "HTTP")
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope.get("path", "")}
        with found.start_as_current_span(
            method, context=propagate.extract(carrier), kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")
