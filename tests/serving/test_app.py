"""Every route of the app and every error mapping, over real HTTP on loopback (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

import lightning_client as lc
from lightning_client.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BudgetExceededError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
    RateLimitError,
)
from lightning_client.generator import Capabilities
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from tests.serving.conftest import Failing

AUTH = {"Authorization": "Bearer k"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Sandbox]]:
    with Sandbox() as sb:
        router = lc.Router(
            [
                lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url),
                lc.FalGenerator(
                    api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
                ),
            ],
            retries=0,
        )
        with ServerThread(create_app(router, settings=ServerSettings(api_keys=("k",)))) as url:
            yield url, sb


def test_native_generations_round_trip_a_result_with_every_attempt(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    body = {"prompt": "a fox", "steps": 2, "seed": 7, "width": 256, "height": 256, "providers": ["fal", "replicate"]}
    response = httpx.post(f"{url}/v1/generations", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    result = lc.GenerationResult.model_validate_json(response.content)
    assert result.provider == "fal" and result.seed == 7
    assert result.images[0].data.startswith(b"\x89PNG")
    assert [a.provider for a in result.attempts] == ["fal"]
    assert result.attempts[0].outcome == "succeeded"
    assert response.headers["x-request-id"]


def test_native_generations_name_a_bad_field(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    response = httpx.post(f"{url}/v1/generations", json={"prompt": "a fox", "width": 100}, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "width" and error["code"] == "InvalidRequestError"
    unknown = httpx.post(f"{url}/v1/generations", json={"prompt": "x", "providers": ["nope"]}, headers=AUTH)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "providers"


def test_url_images_are_served_under_v1_files(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    response = client.images.generate(prompt="a fox", size="256x256", response_format="url", n=2)
    assert response.data is not None and len(response.data) == 2
    for item in response.data:
        assert item.url is not None and item.url.startswith(f"{url}/v1/files/")
        image = httpx.get(item.url)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    missing = httpx.get(f"{url}/v1/files/nothing.png")
    assert missing.status_code == 404 and "error" in missing.json()


def test_openai_names_n_and_size_in_errors(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as too_many:
        client.images.generate(prompt="a fox", n=9)
    assert too_many.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="a fox", size="1000x1000")  # type: ignore[arg-type]
    assert bad_size.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.generate(prompt="a fox", extra_body={"colour": "red"})
    assert "colour" in unknown.value.message


def test_b64_is_the_default_and_our_fields_come_back(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    body = {"prompt": "a fox", "size": "256x256", "seed": 3, "providers": ["replicate"], "quality": "hd"}
    response = httpx.post(f"{url}/v1/images/generations", json=body, headers=AUTH, timeout=30)
    data = response.json()
    assert base64.b64decode(data["data"][0]["b64_json"]).startswith(b"\x89PNG")
    assert data["seed"] == 3 and data["provider"] == "replicate" and data["size"] == "256x256"
    assert data["cost"]["basis"] and "total_s" in data["timings"]
    assert any(w["setting"] == "quality" for w in data["warnings"])


def test_probes_capabilities_status_metrics_and_openapi(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"ready": True}
    caps = httpx.get(f"{url}/v1/capabilities", headers=AUTH).json()
    assert caps["generators"] == ["replicate", "fal"]
    assert Capabilities.model_validate(caps["capabilities"]).steps == {1, 2, 4, 8}
    status = httpx.get(f"{url}/v1/status", headers=AUTH).json()
    assert status["queue_depth"] == 0 and status["in_flight"] == 0
    assert {g["name"]: g["breaker"] for g in status["generators"]} == {"replicate": "closed", "fal": "closed"}
    httpx.post(f"{url}/v1/generations", json={"prompt": "x", "width": 256, "height": 256}, headers=AUTH, timeout=30)
    metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert 'lightning_requests_total{outcome="succeeded",route="generations"}' in metrics
    assert 'lightning_request_seconds_count{phase="total"}' in metrics
    assert "lightning_cost_usd_total" in metrics and "lightning_queue_depth" in metrics
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/images/generations", "/v1/generations", "/v1/status", "/metrics"} <= set(paths)


@pytest.mark.parametrize("route", ["/v1/generations", "/v1/status", "/v1/capabilities", "/metrics"])
def test_api_routes_need_the_key(served: tuple[str, Sandbox], route: str) -> None:
    url, _ = served
    method = "POST" if route == "/v1/generations" else "GET"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k"}):
        response = httpx.request(method, f"{url}{route}", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401, (route, headers)
        assert response.json()["error"]["type"] == "invalid_api_key"


def test_a_deadline_through_the_router_is_a_504(served: tuple[str, Sandbox]) -> None:
    url, sb = served
    sb.replicate.configure(fault="hang")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.images.generate(prompt="a fox", extra_body={"providers": ["replicate"], "timeout_s": 0.5})
        assert caught.value.status_code == 504
        attempts = caught.value.body["attempts"]  # type: ignore[index]
        assert [(a["provider"], a["outcome"]) for a in attempts] == [("replicate", "failed")]
    finally:
        sb.replicate.reset()


@pytest.mark.parametrize(
    ("error", "status", "sdk_error"),
    [
        (InvalidRequestError("bad steps", field="steps"), 400, openai.BadRequestError),
        (ContentFilteredError("blocked"), 400, openai.BadRequestError),
        (BudgetExceededError("no money left"), 402, openai.APIStatusError),
        (RateLimitError("slow down", retry_after=3), 429, openai.RateLimitError),
        (AllProvidersFailedError("all failed", attempts=[]), 502, openai.InternalServerError),
        (ProviderUnavailableError("down"), 502, openai.InternalServerError),
        (ProviderResponseError("garbage"), 502, openai.InternalServerError),
        (AuthenticationError("upstream key rejected"), 502, openai.InternalServerError),
        (GenerationTimeoutError("too slow"), 504, openai.InternalServerError),
    ],
)
def test_every_error_maps_to_its_status_and_sdk_exception(
    error: LightningError, status: int, sdk_error: type[openai.APIStatusError]
) -> None:
    with ServerThread(create_app(Failing(error))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        with pytest.raises(sdk_error) as caught:
            client.images.generate(prompt="a fox", size="256x256")
        assert caught.value.status_code == status
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == type(error).__name__
        if status == 429:
            assert caught.value.response.headers["retry-after"] == "3"
        native = httpx.post(f"{url}/v1/generations", json={"prompt": "x"})
        assert native.status_code == status and native.json()["error"]["code"] == type(error).__name__


class Loading(Failing):
    """A generator whose pipeline loads until released (or fails to load)."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(ProviderUnavailableError("not used"))
        self.released = threading.Event()
        self.fail = fail

    async def aload(self) -> float:
        await asyncio.to_thread(self.released.wait, 60)
        if self.fail:
            raise RuntimeError("no weights")
        return 0.0


def test_readyz_waits_for_the_warm_up() -> None:
    generator = Loading()
    with ServerThread(create_app(generator)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        not_ready = httpx.get(f"{url}/readyz")
        assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
        generator.released.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_failed_warm_up_is_never_ready() -> None:
    generator = Loading(fail=True)
    generator.released.set()
    with ServerThread(create_app(generator)) as url:
        time.sleep(0.3)
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_router_throttled_everywhere_answers_429(served: tuple[str, Sandbox]) -> None:
    url, sb = served
    sb.replicate.configure(error_status=429)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.images.generate(prompt="a fox", size="256x256", extra_body={"providers": ["replicate"]})
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.body["code"] == "RateLimitError"  # type: ignore[index]
    finally:
        sb.replicate.reset()
