"""The official `fal-client` 1.0.x against the sandbox over real HTTP, its module URL constants patched."""

from __future__ import annotations

import io
from typing import Any

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from fal_client.client import Completed, FalClientHTTPError, InProgress, Queued
from PIL import Image

from lightning_client.testing.sandbox import ProviderHandle, Sandbox

APP = "fal-ai/fast-lightning-sdxl"
INPUT: dict[str, Any] = {
    "prompt": "a lighthouse at dusk",
    "image_size": "landscape_4_3",
    "num_inference_steps": "2",
    "seed": 5,
}


@pytest.fixture(autouse=True)
def point_fal_client_at_sandbox(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fal-client builds https URLs from module constants at call time; point them at the sandbox."""
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", lightning_sandbox.fal_url + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", lightning_sandbox.fal_run_url + "/")
    monkeypatch.setattr(fal_module, "REST_URL", lightning_sandbox.fal_rest_url)


def _size(url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(httpx.get(url).content)).size


def test_subscribe_landscape_steps_2_seed_5() -> None:
    updates: list[Any] = []
    result = fal_client.SyncClient(key="id:secret").subscribe(
        APP, INPUT, with_logs=True, on_queue_update=updates.append
    )
    assert result["seed"] == 5
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (1024, 768)
    assert _size(result["images"][0]["url"]) == (1024, 768)
    assert isinstance(updates[-1], Completed) and updates[-1].metrics["inference_time"] > 0


def test_submit_iter_events_get(fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(queue_s=0.1, inference_s=0.2)
    client = fal_client.SyncClient(key="id:secret")
    handle = client.submit(APP, INPUT)
    events = list(handle.iter_events(with_logs=True, interval=0.02))
    kinds = [type(event) for event in events]
    assert kinds[0] is Queued and InProgress in kinds and kinds[-1] is Completed
    assert handle.get()["seed"] == 5
    status = client.status(APP, handle.request_id, with_logs=True)  # URL rebuilt from the module constant
    assert isinstance(status, Completed) and status.logs
    assert client.result(APP, handle.request_id)["prompt"] == INPUT["prompt"]


def test_cancel(fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(inference_s=5)
    client = fal_client.SyncClient(key="id:secret")
    handle = client.submit(APP, INPUT)
    handle.cancel()
    status = handle.status()
    assert isinstance(status, Completed) and status.error_type == "client_cancelled"
    assert fal_sandbox.stats()["canceled"] == 1


def test_run(lightning_sandbox: Sandbox) -> None:
    result = fal_client.SyncClient(key="id:secret").run(APP, INPUT)
    assert result["seed"] == 5 and result["images"][0]["height"] == 768
    # Served by the run origin that answered (clients may trust only the origin they called).
    url = result["images"][0]["url"]
    assert url.startswith(f"{lightning_sandbox.fal_run_url}/files/") and _size(url) == (1024, 768)


def test_queue_results_link_to_the_queue_origin(lightning_sandbox: Sandbox) -> None:
    result = fal_client.SyncClient(key="id:secret").subscribe(APP, INPUT)
    url = result["images"][0]["url"]
    assert url.startswith(f"{lightning_sandbox.fal_url}/files/") and _size(url) == (1024, 768)


def test_steps_3_is_http_error_422() -> None:
    with pytest.raises(FalClientHTTPError) as caught:
        fal_client.SyncClient(key="id:secret").subscribe(APP, {**INPUT, "num_inference_steps": "3"})
    assert caught.value.status_code == 422
    detail: Any = caught.value.message  # the 422 `detail` list, as sent
    assert detail[0]["loc"] == ["body", "num_inference_steps"]


def test_bad_key_is_http_error_401(fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(valid_tokens=["id:good"])
    with pytest.raises(FalClientHTTPError) as caught:
        fal_client.SyncClient(key="id:bad").submit(APP, INPUT)
    assert caught.value.status_code == 401 and caught.value.message == "No user found for Key ID and Secret"


async def test_async_subscribe() -> None:
    result = await fal_client.AsyncClient(key="id:secret").subscribe(APP, INPUT)
    assert result["seed"] == 5 and (result["images"][0]["width"], result["images"][0]["height"]) == (1024, 768)


async def test_async_submit_iter_events_get() -> None:
    client = fal_client.AsyncClient(key="id:secret")
    handle = await client.submit(APP, INPUT)
    events = [event async for event in handle.iter_events(with_logs=True, interval=0.02)]
    assert isinstance(events[-1], Completed)
    assert (await handle.get())["seed"] == 5


async def test_async_cancel(fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(inference_s=5)
    client = fal_client.AsyncClient(key="id:secret")
    handle = await client.submit(APP, INPUT)
    await handle.cancel()
    assert fal_sandbox.stats()["canceled"] == 1


async def test_async_steps_3_is_http_error_422() -> None:
    with pytest.raises(FalClientHTTPError) as caught:
        await fal_client.AsyncClient(key="id:secret").subscribe(APP, {**INPUT, "num_inference_steps": "3"})
    assert caught.value.status_code == 422
