"""The official `fal-client` realtime API against the sandbox, only its URL constants changed."""

from __future__ import annotations

import io

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from PIL import Image

from lightning_client.testing.sandbox import ProviderHandle, Sandbox

APP = "fal-ai/fast-lightning-sdxl"
INPUT = {
    "prompt": "a lighthouse at dusk",
    "image_size": "square",
    "num_inference_steps": "2",
    "seed": 5,
    "sync_mode": True,
}


@pytest.fixture(autouse=True)
def point_fal_client_at_sandbox(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fal-client builds the token URL and the realtime ws URL from module constants at call time."""
    monkeypatch.setattr(fal_module, "REST_URL", lightning_sandbox.fal_rest_url)
    monkeypatch.setattr(fal_module, "REALTIME_URL_FORMAT", lightning_sandbox.fal_realtime_url + "/")


def test_sync_realtime_sends_one_input_and_receives_an_image(fal_sandbox: ProviderHandle) -> None:
    with fal_client.SyncClient(key="id:secret").realtime(APP) as connection:
        connection.send(INPUT)
        result = connection.recv()
    assert result is not None and result["seed"] == 5 and result["prompt"] == INPUT["prompt"]
    image = Image.open(io.BytesIO(result["images"][0]["content"]))
    assert image.size == (512, 512) and image.format == "JPEG"
    assert result["request_id"] in {job["id"] for job in fal_sandbox.jobs()}


def test_realtime_file_urls_are_on_the_socket_origin(lightning_sandbox: Sandbox) -> None:
    """Without `sync_mode` the images are URLs, served by the run origin the socket is on."""
    with fal_client.SyncClient(key="id:secret").realtime(APP) as connection:
        connection.send({**INPUT, "sync_mode": False})
        result = connection.recv()
    assert result is not None
    url = result["images"][0]["url"]
    assert url.startswith(f"{lightning_sandbox.fal_run_url}/files/")
    assert Image.open(io.BytesIO(httpx.get(url).content)).size == (512, 512)


async def test_async_realtime_with_max_buffering() -> None:
    async with fal_client.AsyncClient(key="id:secret").realtime(APP, max_buffering=2) as connection:
        await connection.send({**INPUT, "num_inference_steps": "1"})
        result = await connection.recv()
    assert result is not None and result["images"][0]["width"] == 512


def test_idle_timeout_is_a_realtime_error(lightning_sandbox: Sandbox) -> None:
    lightning_sandbox.fal_realtime.configure(idle_timeout_s=0.2)
    with (
        fal_client.SyncClient(key="id:secret").realtime(APP) as connection,
        pytest.raises(fal_client.client.RealtimeError) as caught,
    ):
        connection.recv()
    assert caught.value.error == "TIMEOUT" and "reconnect" in caught.value.reason


def test_invalid_input_is_a_realtime_error_and_the_socket_stays_open() -> None:
    with fal_client.SyncClient(key="id:secret").realtime(APP) as connection:
        connection.send({**INPUT, "num_inference_steps": "3"})
        with pytest.raises(fal_client.client.RealtimeError) as caught:
            connection.recv()
        connection.send(INPUT)
        assert connection.recv() is not None
    assert caught.value.error == "VALIDATION_ERROR" and "num_inference_steps" in caught.value.reason


def test_header_auth_without_token(fal_sandbox: ProviderHandle) -> None:
    with fal_client.SyncClient(key="id:secret").realtime(APP, use_jwt=False) as connection:
        connection.send(INPUT)
        assert connection.recv() is not None
    assert fal_sandbox.stats()["requests"].get("tokens") is None


def test_refused_without_realtime_endpoint(lightning_sandbox: Sandbox) -> None:
    lightning_sandbox.fal_realtime.configure(refuse=True)
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as caught, fal_client.SyncClient(key="id:secret").realtime(APP):
        pass
    assert caught.value.response.status_code == 403
