"""The OpenTelemetry SDK set up from the standard `OTEL_*` variables, for `lightning-client serve` and `mcp`.

`OTEL_TRACES_EXPORTER` and `OTEL_METRICS_EXPORTER` take a comma-separated list of `console`, `otlp`
and `none`; a signal whose variable is unset gets no provider (so nothing is sent anywhere unless
asked for). `OTEL_SDK_DISABLED=true` turns both off. The resource comes from `OTEL_SERVICE_NAME`
and `OTEL_RESOURCE_ATTRIBUTES` (default service name `lightning-client`); the OTLP exporters read
`OTEL_EXPORTER_OTLP_*` themselves (http/protobuf, or grpc when `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`
and its exporter package is installed).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from lightning_client._log import get_logger

__all__ = ["EXPORTERS", "configure_from_env", "flush_at_shutdown"]

EXPORTERS = ("console", "otlp", "none")
_SERVICE = "lightning-client"
_OTLP = {
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
}

log = get_logger("lightning_client.serving")


def _exporters(environ: Mapping[str, str], signal: str) -> list[str]:
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = [n.strip().lower() for n in environ.get(variable, "").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ValueError(f"{variable}={environ[variable]!r}: unknown exporter(s) {unknown}; choose from {EXPORTERS}")
    return [n for n in names if n != "none"]


def _otlp(environ: Mapping[str, str], signal: str) -> Any:
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    protocol = (environ.get(variable) or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    where = _OTLP.get((signal, protocol))
    if where is None:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use http/protobuf or grpc")
    try:
        module = importlib.import_module(where[0])
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        raise ValueError(f"OTLP over {protocol} needs {package}: pip install {package}") from None
    return getattr(module, where[1])()


def configure_from_env(
    environ: Mapping[str, str] | None = None, *, console: TextIO | None = None
) -> Callable[[], None] | None:
    """Set the global tracer and meter providers the variables ask for; returns their shutdown.

    None when nothing was set (no exporter asked for, the SDK disabled, or not installed: then a
    warning is logged). Raises ValueError naming the variable for a value it cannot honour.
    `console`: where the console exporters write (default stdout; `mcp` over stdio uses stderr).
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces, metrics = _exporters(env, "traces"), _exporters(env, "metrics")
    if not traces and not metrics:
        return None
    try:
        from opentelemetry import metrics as metrics_api
        from opentelemetry import trace as trace_api
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        log.warning("OTEL_*_EXPORTER is set but the OpenTelemetry SDK is not installed: pip install opentelemetry-sdk")
        return None
    resource = Resource.create({} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: _SERVICE})
    shutdowns: list[Callable[[], Any]] = []
    if traces:
        tracer_provider = TracerProvider(resource=resource)
        for name in traces:
            if name == "console":  # printed as each span ends
                exporter = ConsoleSpanExporter() if console is None else ConsoleSpanExporter(out=console)
                tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            else:
                tracer_provider.add_span_processor(BatchSpanProcessor(_otlp(env, "traces")))
        trace_api.set_tracer_provider(tracer_provider)
        shutdowns.append(tracer_provider.shutdown)
    if metrics:
        readers = [
            PeriodicExportingMetricReader(
                (ConsoleMetricExporter() if console is None else ConsoleMetricExporter(out=console))
                if name == "console"
                else _otlp(env, "metrics")
            )
            for name in metrics
        ]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics_api.set_meter_provider(meter_provider)
        shutdowns.append(meter_provider.shutdown)

    def shutdown() -> None:
        for stop in shutdowns:
            stop()

    return shutdown


def flush_at_shutdown(app: Any, shutdown: Callable[[], None]) -> Any:
    """`app` (ASGI) calling `shutdown` once its lifespan has shut down, before the server exits.

    uvicorn ends a SIGTERM by re-raising the signal, which skips `atexit`: spans still batched
    would be lost without this. The wrapper keeps the app's `state`, so the server's drain finds it.
    """
    return _FlushingApp(app, shutdown)


class _FlushingApp:
    """An ASGI app that calls `shutdown` when its wrapped app's lifespan shutdown completes."""

    def __init__(self, app: Any, shutdown: Callable[[], None]) -> None:
        self._app = app
        self._shutdown = shutdown

    @property
    def state(self) -> Any:
        """The wrapped app's state (`ServingState` for an app made by `create_app`)."""
        return getattr(self._app, "state", None)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self._shutdown()
            await send(message)

        await self._app(scope, receive, sending)
