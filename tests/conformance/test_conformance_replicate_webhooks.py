"""The official `replicate` 1.0.x client against the sandbox's HTTPS mode, model/version/deployment routes,
live logs and webhooks."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput

from lightning_client import webhooks
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from tests.conftest import WebhookReceiver

MODEL = "bytedance/sdxl-lightning-4step"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
INPUT = {"prompt": "a lighthouse at dusk", "seed": 42, "width": 768, "height": 512}


@pytest.fixture
def client(replicate_sandbox: ProviderHandle, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    return Client(api_token="r8_sandbox", base_url=replicate_sandbox.url)


def test_tls_run_returns_file_outputs_that_read(
    lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in lightning_sandbox_tls.env().items():
        monkeypatch.setenv(name, value)
    client = Client(api_token="r8_sandbox", base_url=lightning_sandbox_tls.replicate_url)
    output = client.run(f"{MODEL}:{VERSION}", input={**INPUT, "num_outputs": 2})
    assert isinstance(output, list) and len(output) == 2
    assert all(isinstance(item, FileOutput) and item.url.startswith("https://") for item in output)
    assert Image.open(io.BytesIO(output[0].read())).size == (768, 512)


def test_models_get_latest_version_and_versions_list(client: Client) -> None:
    model = client.models.get(MODEL)
    assert model.id == MODEL and model.latest_version is not None and model.latest_version.id == VERSION
    page = model.versions.list()
    assert [version.id for version in page.results] == [VERSION] and page.next is None
    assert "Input" in model.latest_version.openapi_schema["components"]["schemas"]


def test_run_by_model_name_resolves_through_the_model(client: Client) -> None:
    assert len(client.run(MODEL, input=INPUT)) == 1


def test_deployment_predictions(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(deployments={"acme/sdxl-lightning": {"hardware": "gpu-l40s", "max_instances": 2}})
    deployment = client.deployments.get("acme/sdxl-lightning")
    assert deployment.current_release is not None and deployment.current_release.version == VERSION
    assert deployment.current_release.configuration.max_instances == 2
    prediction = client.deployments.predictions.create("acme/sdxl-lightning", input=INPUT)
    prediction.wait()
    assert prediction.status == "succeeded" and len(prediction.output) == 1
    raw = client._client.get(f"/v1/predictions/{prediction.id}").json()
    assert raw["deployment"] == "acme/sdxl-lightning"
    with pytest.raises(ReplicateError) as caught:
        client.deployments.predictions.create("acme/unknown", input=INPUT)
    assert caught.value.status == 404


def test_logs_are_empty_at_creation_and_show_partial_progress(
    client: Client, replicate_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(inference_s=2.0)
    prediction = client.predictions.create(version=VERSION, input=INPUT)
    assert prediction.logs == "" and prediction.progress is None
    partial = None
    deadline = time.monotonic() + 10
    while partial is None and time.monotonic() < deadline:
        time.sleep(0.05)
        prediction.reload()
        progress = prediction.progress
        if progress is not None and 0 < progress.current < progress.total:
            partial = progress
    assert partial is not None and partial.total == 4 and 0 < partial.percentage < 1
    assert (prediction.logs or "").startswith("Using seed: 42\n")
    prediction.wait()
    assert prediction.progress is not None and prediction.progress.percentage == 1.0


def test_webhook_completed_delivers_once_and_verifies(
    client: Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(inference_s=0.3)
    prediction = client.predictions.create(
        version=VERSION, input=INPUT, webhook=webhook_receiver.url, webhook_events_filter=["completed"]
    )
    prediction.wait()
    completed = time.time()
    (delivery,) = webhook_receiver.wait_for(1, timeout=5)
    assert delivery.at - completed < 2
    secret = client.webhooks.default.secret()
    body = webhooks.verify_replicate(delivery.headers, delivery.body, secret.key)
    assert body["id"] == prediction.id and body["status"] == "succeeded"
    # The official client's own validator agrees.
    client.webhooks.validate(headers=delivery.headers, body=delivery.body.decode(), secret=secret)
    changed = delivery.body.replace(b'"succeeded"', b'"succeedeD"')
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify_replicate(delivery.headers, changed, secret.key)
    time.sleep(0.5)
    assert len(webhook_receiver.deliveries) == 1


def test_unknown_event_filter_is_422(client: Client) -> None:
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(
            version=VERSION, input=INPUT, webhook="https://example.com/hook", webhook_events_filter=["bogus"]
        )
    assert caught.value.status == 422
