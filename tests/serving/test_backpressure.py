"""Backpressure: a server over a tiny offline LocalGenerator with --max-queue 2, flooded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

import lightning_client as lc
from lightning_client.serving.admission import Admission, QueueFullError
from lightning_client.testing.tiny import TinyLightning, build_tiny_lightning
from tests.serving.conftest import ServeProcess, start_serve


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def local_server(tiny: TinyLightning) -> Iterator[ServeProcess]:
    server = start_serve("--local-model", str(tiny.root), "--max-queue", "2", "--max-concurrency", "1")
    deadline = time.monotonic() + 300
    while httpx.get(f"{server.url}/readyz").status_code != 200:  # ready once the pipeline is warm
        assert time.monotonic() < deadline, "the local server never became ready"
        time.sleep(0.2)
    yield server
    server.stop()


async def test_a_flood_gets_429_with_retry_after_and_every_accepted_request_completes(
    local_server: ServeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=local_server.url, timeout=600) as client:
        bodies = [{"prompt": f"a fox {i}", "steps": 4, "width": 64, "height": 64, "seed": i} for i in range(8)]
        responses = await asyncio.gather(*(client.post("/v1/generations", json=body) for body in bodies))
        status = (await client.get("/v1/status")).json()
        metrics = (await client.get("/metrics")).text
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 3  # one in flight plus two queued are always accepted
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected, codes
    for response in rejected:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "RateLimitError"
    for body, response in zip(bodies, responses, strict=True):
        if response.status_code == 200:
            result = lc.GenerationResult.model_validate_json(response.content)
            assert result.seed == body["seed"] and result.images[0].data.startswith(b"\x89PNG")
    assert status["queue_depth"] == 0 and status["in_flight"] == 0 and status["ready"] is True
    assert status["mean_service_s"] > 0
    assert 'lightning_pipeline_calls_total{generator="local"}' in metrics


async def test_the_queue_bound_and_its_expected_wait() -> None:
    admission = Admission(max_concurrency=1, max_queue=1)
    admission.service_s = 2.0
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    first = asyncio.create_task(hold())
    second = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    assert (admission.in_flight, admission.queued) == (1, 1)
    assert admission.expected_wait_s() == 4.0  # two ahead, one slot, 2 s each
    assert admission.expected_wait_s(generator_wait_s=1.5) == 5.5
    with pytest.raises(QueueFullError) as full:
        async with admission.slot():
            pass
    assert full.value.expected_wait_s == 4.0
    release.set()
    await asyncio.gather(first, second)
    assert (admission.in_flight, admission.queued) == (0, 0)
    assert admission.expected_wait_s() == 0.0
