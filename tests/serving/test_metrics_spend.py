"""`/metrics` counts every attempt's known cost (succeeded, cancelled, disconnected, realtime) and
every HTTP answer by status class."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.testing import Sandbox

BODY = {"prompt": "a fox", "steps": 4, "width": 256, "height": 256}


def _until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _hang_up_once_running(url: str, sb: Sandbox) -> None:
    """POST a Replicate generation on a raw socket and close it once its job runs (however slow the machine)."""
    body = json.dumps({**BODY, "providers": ["replicate"]}).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        head = f"POST /v1/generations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        conn.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        _until(lambda: any(j["status"] == "running" for j in sb.replicate.jobs()))


def test_metrics_known_cost_equals_the_ledgers_after_a_mixed_run() -> None:
    with Sandbox() as sb:
        router = lc.Router(
            [
                lc.FalGenerator(
                    api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
                ),
                lc.ReplicateGenerator(api_key="r8", base_url=sb.replicate_url),
            ],
            retries=0,
        )
        with ServerThread(create_app(router, routers=[playground_router()])) as url:
            sb.replicate.configure(inference_s=0.2)
            for provider in ("fal", "replicate"):
                ok = httpx.post(f"{url}/v1/generations", json={**BODY, "providers": [provider]}, timeout=60)
                assert ok.status_code == 200, ok.text
            assert httpx.post(f"{url}/v1/generations", json={**BODY, "steps": 3}, timeout=60).status_code == 400
            sb.replicate.configure(inference_s=30)
            _hang_up_once_running(url, sb)  # the client hangs up: its job is cancelled upstream
            # The hung-up job must be over before the socket's first job is looked for among the running ones.
            _until(lambda: not any(j["status"] == "running" for j in sb.replicate.jobs()))
            sb.replicate.configure(inference_s=1.0)
            with connect("ws" + url.removeprefix("http") + "/v1/realtime") as ws:
                send = {"type": "send", "steps": 4, "width": 256, "height": 256, "provider": "replicate"}
                ws.send(json.dumps({**send, "prompt": "first"}))
                _until(lambda: sum(j["status"] == "running" for j in sb.replicate.jobs()) == 1)
                ws.send(json.dumps({**send, "prompt": "second"}))  # cancels the first job
                while (frame := json.loads(ws.recv(timeout=60)))["type"] != "frame":
                    assert frame["type"] != "error", frame
            _until(lambda: all(j["status"] in ("succeeded", "canceled") for j in sb.replicate.jobs()))
            _until(lambda: all(a.outcome is not None for a in router.ledger.records()))
            text = httpx.get(f"{url}/metrics", timeout=10).text
        outcomes = [a.outcome for a in router.ledger.records()]
        assert outcomes.count("canceled") == 2 and outcomes.count("succeeded") == 3, outcomes
        known = router.ledger.cost().known_usd
        assert known > 0
        assert sum(_samples(text, "lightning_cost_usd_total").values()) == pytest.approx(known)
        classes = _samples(text, "lightning_http_responses_total")
        assert classes[(("status_class", "4xx"),)] == 2  # the 400, and the disconnect's 499
        assert classes[(("status_class", "2xx"),)] >= 2
