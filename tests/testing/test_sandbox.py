"""`Sandbox` itself: start/stop (sync and async), URLs, ports, handles, and releasing held requests on exit."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from lightning_client.testing import Latency, Sandbox
from lightning_client.testing._replicate_schema import VERSION
from tests.testing.conftest import sandbox_on_a_fixed_port

AUTH = {"Authorization": "Bearer r8_test"}
BODY = {"version": VERSION, "input": {"prompt": "x", "seed": 1}}


def _sandbox_threads() -> int:
    return sum(thread.name == "lightning-sandbox" for thread in threading.enumerate())


def test_urls_and_shutdown() -> None:
    before = _sandbox_threads()
    with Sandbox() as sb:
        urls = {sb.replicate_url, sb.fal_url, sb.fal_run_url, sb.fal_rest_url}
        assert len(urls) == 4 and all(u.startswith("http://127.0.0.1:") for u in urls)
        assert sb.replicate.url == sb.replicate_url and sb.fal.url == sb.fal_url
        assert httpx.get(f"{sb.replicate_url}/v1/predictions", headers=AUTH).status_code == 200
        assert sb.env()["REPLICATE_BASE_URL"] == sb.replicate_url
        assert _sandbox_threads() == before + 1
    assert _sandbox_threads() == before
    with pytest.raises(RuntimeError, match="not running"):
        _ = sb.replicate_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{next(iter(urls))}/v1/predictions")


def test_provider_can_be_left_out() -> None:
    with Sandbox(fal=False) as sb:
        assert sb.replicate_url
        with pytest.raises(RuntimeError, match="fal=False"):
            _ = sb.fal_url
        assert "FAL_KEY" not in sb.env()


def test_fixed_port_numbers_follow_the_given_port() -> None:
    sb, port = sandbox_on_a_fixed_port()
    with sb:
        assert sb.replicate_url.endswith(f":{port}") and sb.fal_url.endswith(f":{port + 1}")
        assert sb.fal_run_url.endswith(f":{port + 2}") and sb.fal_rest_url.endswith(f":{port + 3}")


def test_a_busy_port_fails_start() -> None:
    with Sandbox() as first:
        port = int(first.replicate_url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            Sandbox(port=port).start()


def test_stop_releases_hung_requests() -> None:
    errors: list[BaseException] = []
    sb = Sandbox().start()
    sb.replicate.configure(fault="hang")

    def call() -> None:
        try:
            httpx.post(f"{sb.replicate_url}/v1/predictions", json=BODY, headers=AUTH, timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    sb.stop()
    caller.join(5)
    assert not caller.is_alive() and time.monotonic() - started < 3
    assert len(errors) == 1


async def test_async_context_manager_does_not_block_the_loop() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    async with Sandbox() as sb:
        async with httpx.AsyncClient(headers=AUTH) as client:
            created = await client.post(f"{sb.replicate_url}/v1/predictions", json=BODY, headers={"Prefer": "wait"})
        assert created.json()["status"] == "succeeded"
    ticker.cancel()
    assert ticks > 5


def test_handles_configure_reset_stats_jobs() -> None:
    with Sandbox(seed=3) as sb:
        with pytest.raises(ValueError, match="bogus"):
            sb.replicate.configure(bogus=1)
        sb.replicate.configure(inference_s=Latency(0.01), workers=2)
        with httpx.Client(headers=AUTH) as client:
            body = client.post(f"{sb.replicate_url}/v1/predictions", json=BODY, headers={"Prefer": "wait"}).json()
        [job] = sb.replicate.jobs()
        assert job["id"] == body["id"] and job["status"] == "succeeded" and job["input"]["prompt"] == "x"
        assert job["created_at"] <= job["started_at"] <= job["completed_at"]
        assert sb.replicate.stats()["created"] == 1
        sb.replicate.reset()
        assert sb.replicate.stats() == {
            "created": 0,
            "succeeded": 0,
            "failed": 0,
            "canceled": 0,
            "aborted": 0,
            "queued": 0,
            "running": 0,
            "requests": {},
            "webhooks": {"tries": 0, "delivered": 0, "failed": 0, "gave_up": 0, "lost": 0},
        }
        assert sb.replicate.jobs() == []
        with httpx.Client(headers=AUTH) as client:
            again = client.post(f"{sb.replicate_url}/v1/predictions", json=BODY).json()
        assert again["id"] != body["id"]  # ids are never reused within a sandbox


def test_configure_before_start_and_reset_cancels_running_jobs() -> None:
    sb = Sandbox()
    sb.fal.configure(inference_s=5)
    with sb:
        response = httpx.post(
            f"{sb.fal_url}/fal-ai/fast-lightning-sdxl", json={"prompt": "x"}, headers={"Authorization": "Key a:b"}
        )
        assert response.status_code == 200
        assert sb.fal.stats()["running"] + sb.fal.stats()["queued"] == 1
        sb.fal.reset()
        assert sb.fal.stats()["running"] == 0 and sb.fal.jobs() == []


def test_same_seed_gives_same_ids_and_drawn_seeds() -> None:
    def first_prediction() -> tuple[str, str]:
        with Sandbox(seed=9) as sb, httpx.Client(headers=AUTH) as client:
            body = client.post(
                f"{sb.replicate_url}/v1/predictions",
                json={"version": VERSION, "input": {"prompt": "x"}},
                headers={"Prefer": "wait"},
            ).json()
            return body["id"], body["logs"].split("\n")[0]

    assert first_prediction() == first_prediction()
