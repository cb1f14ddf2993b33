"""The official `replicate` 1.0.x client against the sandbox over real HTTP, unchanged but for the base URL."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError

from lightning_client.testing.sandbox import ProviderHandle

MODEL = "bytedance/sdxl-lightning-4step"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
REF = f"{MODEL}:{VERSION}"
INPUT = {"prompt": "a lighthouse at dusk", "seed": 42, "width": 768, "height": 512}


@pytest.fixture
def client(replicate_sandbox: ProviderHandle, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")  # read when the client is built
    return Client(api_token="r8_sandbox", base_url=replicate_sandbox.url)


def _urls(output: object) -> list[str]:
    """`run()` output for this model: a list of URL strings (http:// URLs are not wrapped in FileOutput)."""
    assert isinstance(output, list) and all(isinstance(url, str) for url in output)
    return output


def _png(url: str) -> bytes:
    response = httpx.get(url)
    response.raise_for_status()
    return response.content


def test_run_with_sync_wait(client: Client, replicate_sandbox: ProviderHandle) -> None:
    output = client.run(REF, input=INPUT)
    # http:// URLs are not wrapped in FileOutput by the client (only https: and data: are).
    assert isinstance(output, list) and len(output) == 1 and isinstance(output[0], str)
    assert Image.open(io.BytesIO(_png(output[0]))).size == (768, 512)
    requests = replicate_sandbox.stats()["requests"]
    assert requests["create"] == 1 and requests["version"] == 1 and "get" not in requests


def test_run_without_sync_wait_polls(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0.2)
    assert len(_urls(client.run(REF, input=INPUT, wait=False))) == 1
    assert replicate_sandbox.stats()["requests"]["get"] >= 2


def test_run_when_the_sync_wait_runs_out(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=1.5)
    assert len(_urls(client.run(REF, input=INPUT, wait=1))) == 1
    assert replicate_sandbox.stats()["requests"]["get"] >= 1


def test_same_input_twice_gives_identical_image_bytes(client: Client) -> None:
    first, second = _urls(client.run(REF, input=INPUT)), _urls(client.run(REF, input=INPUT))
    assert first[0] != second[0]  # two predictions...
    assert _png(first[0]) == _png(second[0])  # ...with the same picture


def test_predictions_create_get_wait(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0.2)
    prediction = client.predictions.create(version=VERSION, input=INPUT)
    assert client.predictions.get(prediction.id).status in ("starting", "processing")
    prediction.wait()
    assert prediction.status == "succeeded" and (prediction.logs or "").startswith("Using seed: 42")
    assert (prediction.metrics or {})["predict_time"] > 0.15 and len(_urls(prediction.output)) == 1
    assert replicate_sandbox.stats()["created"] == 1


def test_predictions_cancel(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=5)
    prediction = client.predictions.create(version=VERSION, input=INPUT)
    canceled = client.predictions.cancel(prediction.id)
    assert canceled.status == "canceled"
    prediction.reload()
    assert prediction.status == "canceled"
    assert replicate_sandbox.stats()["canceled"] == 1


async def test_async_run_and_create(client: Client) -> None:
    assert len(_urls(await client.async_run(REF, input=INPUT))) == 1
    prediction = await client.predictions.async_create(version=VERSION, input=INPUT)
    await prediction.async_wait()
    assert prediction.status == "succeeded"


def test_validation_error_is_replicate_error_422(client: Client, replicate_sandbox: ProviderHandle) -> None:
    with pytest.raises(ReplicateError) as caught:
        client.run(REF, input={**INPUT, "width": 2000})
    assert caught.value.status == 422 and caught.value.title == "Input validation failed"
    assert "input.width: Must be less than or equal to 1280" in (caught.value.detail or "")
    assert replicate_sandbox.stats()["created"] == 0


# What is validated and what is ignored, as on Replicate: inputs the model's schema does not have are
# ignored (cog PR #2943 removed `additionalProperties: false` from model input validation, since refusing
# them broke backwards compatibility); known inputs are still checked (types, ranges, enums); an unknown
# top-level property is still a 422 `additional_property_not_allowed` (Replicate changelog, 2024-05-01).


def test_unknown_inputs_are_ignored_and_named_in_the_logs(client: Client) -> None:
    prediction = client.predictions.create(version=VERSION, input={"prompt": "x", "size": "768x512"})
    prediction.wait()
    assert prediction.status == "succeeded"
    assert Image.open(io.BytesIO(_png(_urls(prediction.output)[0]))).size == (1024, 1024)  # the default size
    assert "Warning: ignoring input 'size'" in (prediction.logs or "").splitlines()[0]


def test_wrong_type_for_a_known_input_is_still_422(client: Client, replicate_sandbox: ProviderHandle) -> None:
    with pytest.raises(ReplicateError) as caught:
        client.run(REF, input={"prompt": "x", "size": "768x512", "num_outputs": "2"})
    assert caught.value.status == 422
    assert "input.num_outputs: Invalid type. Expected: integer, given: string" in (caught.value.detail or "")
    assert replicate_sandbox.stats()["created"] == 0


def test_unknown_top_level_property_is_still_422(client: Client, replicate_sandbox: ProviderHandle) -> None:
    # The client sends only the fields it knows, so the raw request goes through its HTTP client.
    response = client._client.post("/v1/predictions", json={"version": VERSION, "input": INPUT, "size": "768x512"})
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["type"] == "additional_property_not_allowed"
    assert replicate_sandbox.stats()["created"] == 0


def test_failed_prediction_is_model_error(client: Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="nsfw")
    with pytest.raises(ModelError, match="NSFW"):
        client.run(REF, input=INPUT)


def test_bad_token_is_replicate_error_401(replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(valid_tokens=["r8_good"])
    client = Client(api_token="r8_bad", base_url=replicate_sandbox.url)
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(version=VERSION, input=INPUT)
    assert caught.value.status == 401 and caught.value.title == "Unauthenticated"
