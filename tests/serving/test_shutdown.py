"""SIGTERM drains the server: requests in flight are cancelled upstream and recorded, drained callers
get a 503 in the OpenAI error shape, and the ledger is flushed and closed before the process exits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from tests.serving.conftest import start_serve
from tests.serving.test_lifecycle import _consecutive_ports

BODY = {"prompt": "a fox", "steps": 4, "width": 256, "height": 256, "providers": ["replicate"]}


def _until(check: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _post(url: str) -> httpx.Response | httpx.HTTPError:
    try:
        return httpx.post(f"{url}/v1/generations", json=BODY, timeout=180)
    except httpx.HTTPError as exc:
        return exc


def _drained(answer: Any) -> bool:
    """A 503 in the OpenAI error shape."""
    if not isinstance(answer, httpx.Response) or answer.status_code != 503:
        return False
    error = answer.json()["error"]
    return error["code"] == "ProviderUnavailableError" and "shutting down" in error["message"]


def test_sigterm_with_40_in_flight_records_every_outcome_and_leaves_nothing_running(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    with Sandbox(port=_consecutive_ports()) as sb:
        sb.replicate.configure(inference_s=120)
        served = start_serve(
            "--sandbox-url", sb.replicate_url, "--grace-s", "1", "--max-concurrency", "40", "--ledger", str(ledger)
        )
        with ThreadPoolExecutor(40) as pool:
            answers = [pool.submit(_post, served.url) for _ in range(40)]
            _until(lambda: sum(j["status"] == "running" for j in sb.replicate.jobs()) == 40)
            _, stderr = served.stop(timeout_s=120)
            results = [a.result() for a in answers]
        assert all(_drained(r) for r in results), [getattr(r, "status_code", r) for r in results]
        jobs = sb.replicate.jobs()
        assert len(jobs) == 40 and {j["status"] for j in jobs} == {"canceled"}
    assert "Traceback" not in stderr and "Exception in ASGI application" not in stderr
    with lc.Ledger(ledger) as records:
        rows = records.records()
    assert len(rows) == 40
    assert all(a.outcome == "canceled" and a.ended_at is not None and a.cost.recorded for a in rows)


def test_draining_answers_queued_and_new_requests_503_without_sending_them() -> None:
    with Sandbox() as sb:
        sb.replicate.configure(inference_s=120)
        router = lc.Router([lc.ReplicateGenerator(api_key="r8", base_url=sb.replicate_url)], retries=0)
        server = ServerThread(create_app(router, settings=ServerSettings(max_concurrency=1, max_queue=4)), grace_s=0.5)
        url = server.start()
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(_post, url) for _ in range(3)]
            _until(lambda: httpx.get(f"{url}/v1/status").json()["queue_depth"] == 2)
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            results = [a.result() for a in answers]
            stopping.join(120)
        assert all(_drained(r) for r in results), [getattr(r, "status_code", r) for r in results]
        assert [j["status"] for j in sb.replicate.jobs()] == ["canceled"]  # the queued ones were never sent
        assert [a.outcome for a in router.ledger.records()] == ["canceled"]


def test_draining_cancels_realtime_jobs_and_closes_their_sockets() -> None:
    with Sandbox() as sb:
        sb.replicate.configure(inference_s=120)
        router = lc.Router([lc.ReplicateGenerator(api_key="r8", base_url=sb.replicate_url)], retries=0)
        server = ServerThread(create_app(router, routers=[playground_router()]), grace_s=0.5)
        url = server.start()
        with connect("ws" + url.removeprefix("http") + "/v1/realtime") as ws:
            ws.send(json.dumps({"type": "send", "prompt": "a fox", "steps": 4, "width": 256, "height": 256}))
            _until(lambda: [j["status"] for j in sb.replicate.jobs()] == ["running"])
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=120)
            stopping.join(120)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert [j["status"] for j in sb.replicate.jobs()] == ["canceled"]
        assert [a.outcome for a in router.ledger.records()] == ["canceled"]
