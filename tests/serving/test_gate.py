"""One gate for every path: queued requests whose client left are never sent; realtime jobs pass
admission and the router's budget like HTTP requests, and frames carry the caller's own figures."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

import lightning_client as lc
from lightning_client.serving.admission import Admission, ShuttingDownError
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
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


def _served(router: lc.Router, **settings: Any) -> ServerThread:
    return ServerThread(create_app(router, settings=ServerSettings(**settings), routers=[playground_router()]))


def _socket(url: str) -> ClientConnection:
    return connect("ws" + url.removeprefix("http") + "/v1/realtime")


def _answer(ws: ClientConnection) -> dict[str, Any]:
    """The next frame or error (hello skipped)."""
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=60))
        if message["type"] in ("frame", "error"):
            return message


def _send(ws: ClientConnection, prompt: str) -> None:
    ws.send(json.dumps({"type": "send", "prompt": prompt, "steps": 4, "seed": 1, "width": 256, "height": 256}))


def test_realtime_jobs_pass_the_budget_before_anything_is_sent(sandbox: Sandbox) -> None:
    router = lc.Router([_fal(sandbox)], retries=0, budget_usd=1e-6)
    with _served(router) as url:
        refused = httpx.post(f"{url}/v1/generations", json=BODY, timeout=60)
        assert refused.status_code == 402
        with _socket(url) as ws:
            for i in range(3):
                _send(ws, f"a fox {i}")
                answer = _answer(ws)
                assert answer["type"] == "error" and answer["error"] == "BudgetExceededError", answer
    assert sandbox.fal.stats()["created"] == 0
    assert sandbox.fal_realtime.stats().get("inputs", 0) == 0


def test_realtime_jobs_are_charged_to_the_routers_budget(sandbox: Sandbox) -> None:
    router = lc.Router([_fal(sandbox)], retries=0, budget_usd=1.0)
    with _served(router) as url, _socket(url) as ws:
        _send(ws, "a fox")
        frame = _answer(ws)
    assert frame["type"] == "frame" and frame["cost_usd"] > 0, frame
    assert router.budget.spent_usd == pytest.approx(router.ledger.cost().known_usd)
    assert router.budget.spent_usd > 0


def test_realtime_jobs_hold_admission_slots_so_upstream_jobs_never_overlap(sandbox: Sandbox) -> None:
    sandbox.replicate.configure(inference_s=0.5)
    router = lc.Router([_replicate(sandbox)], retries=0)
    answers: list[dict[str, Any]] = []
    with _served(router, max_concurrency=1, max_queue=0) as url:

        def one(i: int) -> None:
            with _socket(url) as ws:
                _send(ws, f"a fox {i}")
                answers.append(_answer(ws))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    kinds = sorted(a["type"] if a["type"] == "frame" else a["error"] for a in answers)
    assert len(kinds) == 6 and "frame" in kinds and set(kinds) <= {"frame", "RateLimitError"}, kinds
    jobs = sorted(sandbox.replicate.jobs(), key=lambda j: j["created_at"])
    assert len(jobs) == kinds.count("frame")
    for earlier, later in itertools.pairwise(jobs):
        assert later["created_at"] >= earlier["completed_at"], jobs


def test_frames_carry_the_callers_own_summary_not_the_ledger(sandbox: Sandbox) -> None:
    router = lc.Router([_fal(sandbox)], retries=0)
    with _served(router) as url:
        for i in range(2):  # another caller's attempts, over HTTP
            assert httpx.post(f"{url}/v1/generations", json={**BODY, "seed": i}, timeout=60).status_code == 200
        with _socket(url) as ws:
            _send(ws, "mine")
            frame = _answer(ws)
    assert frame["type"] == "frame", frame
    assert len(router.ledger.records()) == 3
    assert [(row["provider"], row["count"], row["succeeded"]) for row in frame["ledger"]] == [("fal", 1, 1)]
    assert frame["ledger"][0]["known_cost"] == pytest.approx(frame["cost_usd"])
    assert frame["stats"]["sent"] == frame["stats"]["served"] == 1


async def test_admission_bounds_requests_arriving_together_and_lets_queued_ones_leave() -> None:
    admission = Admission(max_concurrency=1, max_queue=1)
    release = asyncio.Event()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hold(left: asyncio.Future[None] | None = None) -> None:
        async with admission.slot(gone=left):
            await release.wait()

    together = [asyncio.create_task(hold()), asyncio.create_task(hold(gone)), asyncio.create_task(hold())]
    await asyncio.sleep(0.05)
    assert (admission.in_flight, admission.queued) == (1, 1)
    gone.set_result(None)  # the queued caller hangs up
    await asyncio.sleep(0.05)
    assert admission.queued == 0
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    admission.close()  # shutdown: the queued one leaves, new ones are refused
    with pytest.raises(ShuttingDownError):
        async with admission.slot():
            pass
    release.set()
    results = await asyncio.gather(*together, waiting, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType", "LeftQueueError", "QueueFullError", "ShuttingDownError"]
    assert (admission.in_flight, admission.queued) == (0, 0)
