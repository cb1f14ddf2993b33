"""The official `fal-client` 1.0.x with `webhook_url` against the sandbox, and against its HTTPS mode (queue,
files and the realtime WebSocket)."""

from __future__ import annotations

import io
import ssl

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from PIL import Image

from lightning_client import webhooks
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from tests.conftest import WebhookReceiver

APP = "fal-ai/fast-lightning-sdxl"


def _point_at(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", sandbox.fal_url + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", sandbox.fal_run_url + "/")
    monkeypatch.setattr(fal_module, "REST_URL", sandbox.fal_rest_url)


def test_submit_with_webhook_url_delivers_a_verifiable_result(
    lightning_sandbox: Sandbox,
    fal_sandbox: ProviderHandle,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(lightning_sandbox, monkeypatch)
    client = fal_client.SyncClient(key="id:secret")
    handle = client.submit(APP, {"prompt": "a red fox", "seed": 11}, webhook_url=webhook_receiver.url)
    (delivery,) = webhook_receiver.wait_for(1)
    jwks = webhooks.JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json").get()
    body = webhooks.verify_fal(delivery.headers, delivery.body, jwks)
    assert body["request_id"] == handle.request_id and body["status"] == "OK"
    assert body["payload"] == handle.get()


def test_receiver_answering_500_twice_gets_a_third_try(
    lightning_sandbox: Sandbox,
    fal_sandbox: ProviderHandle,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(lightning_sandbox, monkeypatch)
    webhook_receiver.statuses.extend([500, 500])
    handle = fal_client.SyncClient(key="id:secret").submit(APP, {"prompt": "x"}, webhook_url=webhook_receiver.url)
    deliveries = webhook_receiver.wait_for(3, timeout=10)  # default backoff: the third try within 10 s
    assert [d.headers["x-fal-webhook-request-id"] for d in deliveries] == [handle.request_id] * 3
    jwks = webhooks.fetch_jwks(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    assert webhooks.verify_fal(deliveries[2].headers, deliveries[2].body, jwks)["request_id"] == handle.request_id
    assert fal_sandbox.stats()["webhooks"]["delivered"] == 1


def test_subscribe_over_tls(lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in lightning_sandbox_tls.env().items():
        monkeypatch.setenv(name, value)
    _point_at(lightning_sandbox_tls, monkeypatch)
    result = fal_client.SyncClient(key="id:secret").subscribe(APP, {"prompt": "x", "image_size": "square"})
    url = result["images"][0]["url"]
    assert url.startswith("https://")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=True, trust_env=False)  # not trusted without the sandbox's CA
    image = httpx.get(url, verify=ssl.create_default_context(cafile=lightning_sandbox_tls.ca_bundle)).content
    assert Image.open(io.BytesIO(image)).size == (512, 512)


def test_realtime_over_tls(lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in lightning_sandbox_tls.env().items():
        monkeypatch.setenv(name, value)
    assert lightning_sandbox_tls.fal_realtime_url.startswith("wss://")
    monkeypatch.setattr(fal_module, "REST_URL", lightning_sandbox_tls.fal_rest_url)
    monkeypatch.setattr(fal_module, "REALTIME_URL_FORMAT", lightning_sandbox_tls.fal_realtime_url + "/")
    with fal_client.SyncClient(key="id:secret").realtime(APP) as connection:
        connection.send({"prompt": "x", "image_size": "square", "num_inference_steps": "1", "sync_mode": True})
        result = connection.recv()
    assert result is not None and Image.open(io.BytesIO(result["images"][0]["content"])).size == (512, 512)
