"""`lightning-client serve` sets up the OpenTelemetry SDK from the standard `OTEL_*` variables."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning_client as lc
from tests.conftest import WebhookReceiver
from tests.serving.conftest import start_serve


def test_otlp_spans_reach_the_collector_by_shutdown(webhook_receiver: WebhookReceiver) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{webhook_receiver.url}/v1/traces",
        "OTEL_SERVICE_NAME": "images-api",
    }
    server = start_serve("--sandbox", "--api-key", "k", env=env)
    try:
        remote = lc.RemoteGenerator(server.url, api_key="k")
        remote.generate("x", width=256, height=256)
        remote.close()
    finally:
        server.stop()  # SIGTERM: the batched spans are flushed before the process exits
    delivery = webhook_receiver.wait_for(1)[0]
    assert delivery.path.endswith("/v1/traces") and delivery.headers["content-type"] == "application/x-protobuf"
    assert b"images-api" in delivery.body and b"generate_content" in delivery.body


def test_an_unknown_exporter_is_a_usage_error_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightning_client", "serve", "--sandbox", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "jaeger"},
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in done.stderr and "console" in done.stderr and "otlp" in done.stderr
