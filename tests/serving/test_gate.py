"""One gate for every path: queued requests whose client left are never sent; realtime jobs pass
admission and the router's budget like HTTP requests, and frames carry the caller's own figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox

BODY = {"prompt": "a fox", "steps": 4, "width": 256, "height": 256}


def _until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _replicate(sb: Sandbox) -> lc.ReplicateGenerator:
    return lc.ReplicateGenerator(api_key="r8", base_url=sb.replicate_url)


def _fal(sb: Sandbox) -> lc.FalGenerator:
    return lc.FalGenerator(api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url)


def _post(url: str, timeout_s: float, outcome: list[Any]) -> threading.Thread:
    def call() -> None:
        try:
            outcome.append(httpx.post(f"{url}/v1/generations", json=BODY, timeout=timeout_s))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


def test_requests_whose_client_left_the_queue_are_never_sent(sandbox: Sandbox) -> None:
    sandbox.replicate.configure(inference_s=60)
    router = lc.Router([_replicate(sandbox)], retries=0)
    settings = ServerSettings(max_concurrency=1, max_queue=8)
    with ServerThread(create_app(router, settings=settings)) as url:
        holder: list[Any] = []
        holding = _post(url, 120, holder)  # takes the only slot; its job runs upstream
        _until(lambda: [j["status"] for j in sandbox.replicate.jobs()] == ["running"])
        left: list[Any] = []
        quitters = [_post(url, 1.5, left) for _ in range(3)]  # queued, then they hang up
        for thread in quitters:
            thread.join(60)
        assert all(isinstance(r, httpx.ReadTimeout) for r in left), left
        _until(lambda: httpx.get(f"{url}/v1/status").json()["queue_depth"] == 0)
        sandbox.replicate.configure(inference_s=0.05)
        sandbox.replicate.reset()  # the held job ends (canceled), which frees the slot
        holding.join(60)
        last = httpx.post(f"{url}/v1/generations", json=BODY, timeout=60)
        assert last.status_code == 200, last.text
        assert len(sandbox.replicate.jobs()) == 1  # only the last request reached the provider
        records = router.ledger.records()
        assert [a.provider for a in records].count("replicate") == 2  # no provider call for those that left
        unsent = [a for a in records if a.provider == "router"]
        assert len(unsent) == 3
        assert all(a.outcome == "canceled" and a.cost.usd == 0.0 and not a.remote_ids for a in unsent)
        assert all("disconnected while queued" in (a.note or "") for a in unsent)
