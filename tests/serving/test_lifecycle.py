"""Disconnects cancel their generation; SIGTERM drains requests in flight, then cancels and records the rest."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.testing import Sandbox
from tests.serving.conftest import start_serve

BODY = {"prompt": "a fox", "steps": 2, "width": 256, "height": 256, "providers": ["replicate"]}


def _until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _statuses(sb: Sandbox) -> list[str]:
    return [str(job["status"]) for job in sb.replicate.jobs()]


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        sb.replicate.configure(inference_s=60)
        yield sb


def test_a_client_that_disconnects_cancels_its_generation(slow_sandbox: Sandbox) -> None:
    router = lc.Router([lc.ReplicateGenerator(api_key="r8", base_url=slow_sandbox.replicate_url)], retries=0)
    with ServerThread(create_app(router)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/generations", json=BODY, timeout=httpx.Timeout(2.0))
        _until(lambda: _statuses(slow_sandbox) == ["canceled"])
        metrics = httpx.get(f"{url}/metrics").text
        assert 'lightning_requests_total{outcome="disconnected",route="generations"} 1.0' in metrics
        assert [a.outcome for a in router.ledger.records()] == ["canceled"]


async def test_cancelling_a_remote_call_cancels_the_remote_job(slow_sandbox: Sandbox) -> None:
    router = lc.Router([lc.ReplicateGenerator(api_key="r8", base_url=slow_sandbox.replicate_url)], retries=0)
    with ServerThread(create_app(router)) as url:
        async with lc.RemoteGenerator(url) as remote:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(remote.agenerate("a fox", width=256, height=256), 2.0)
        await asyncio.to_thread(_until, lambda: _statuses(slow_sandbox) == ["canceled"])


def _consecutive_ports(count: int = 4) -> int:
    """A base port N with N..N+count-1 free (the layout `Sandbox(port=N)` uses)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for offset in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports")


def _post_in_thread(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["response"] = httpx.post(f"{url}/v1/generations", json=BODY, timeout=120)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    with Sandbox(port=_consecutive_ports()) as sb:
        sb.replicate.configure(inference_s=3)
        served = start_serve("--sandbox-url", sb.replicate_url, "--grace-s", "60")
        thread, outcome = _post_in_thread(served.url)
        _until(lambda: _statuses(sb) == ["running"])
        status, _ = served.stop()
        thread.join(60)
        assert outcome["response"].status_code == 200, outcome
        assert lc.GenerationResult.model_validate_json(outcome["response"].content).provider == "replicate"
        assert status in (0, -15)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.url}/healthz")


def test_sigterm_cancels_and_records_what_outlives_the_grace(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    with Sandbox(port=_consecutive_ports()) as sb:
        sb.replicate.configure(inference_s=120)
        served = start_serve("--sandbox-url", sb.replicate_url, "--grace-s", "1", "--ledger", str(ledger))
        thread, outcome = _post_in_thread(served.url)
        _until(lambda: _statuses(sb) == ["running"])
        started = time.monotonic()
        _, stderr = served.stop()
        assert time.monotonic() - started < 60
        thread.join(60)
        assert "error" in outcome or outcome["response"].status_code >= 500
        assert _statuses(sb) == ["canceled"]
        assert "cancelled (server shutting down)" in stderr
    with lc.Ledger(ledger) as records:
        assert [(a.provider, a.outcome) for a in records.records()] == [("replicate", "canceled")]
