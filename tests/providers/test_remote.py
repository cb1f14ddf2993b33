"""`RemoteGenerator` against a real server on loopback: results, capabilities, waits, errors, failover."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
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
    ProviderUnavailableError,
    RateLimitError,
)
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from tests.serving.conftest import Failing, start_serve


def _hosted(sb: Sandbox) -> list[lc.Generator]:
    return [
        lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url),
        lc.FalGenerator(api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url),
    ]


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def server(sb: Sandbox) -> Iterator[str]:
    app = create_app(lc.Router(_hosted(sb), retries=0), settings=ServerSettings(api_keys=("k",)))
    with ServerThread(app) as url:
        yield url


async def test_a_remote_result_carries_the_servers_timings_cost_and_job_id(server: str) -> None:
    async with lc.RemoteGenerator(server, api_key="k") as remote:
        result = await remote.agenerate("a fox", steps=4, seed=11, width=256, height=256)
    assert result.provider == "remote" and result.seed == 11
    assert result.images[0].data.startswith(b"\x89PNG") and result.images[0].width == 256
    assert result.cost.basis and result.cost.usd > 0
    assert result.timings.inference_s is not None and result.timings.total_s is not None
    attempt = result.attempts[0]
    assert attempt.outcome == "succeeded" and attempt.request_id == result.request_id
    assert attempt.remote_ids == [result.request_id]
    assert attempt.note is not None and attempt.note.startswith("served by replicate")


async def test_capabilities_and_expected_wait_come_from_the_server(server: str) -> None:
    remote = lc.RemoteGenerator(server, api_key="k")
    assert remote.expected_wait_s() is None
    await remote.refresh_expected_wait()
    assert remote.capabilities.min_side == 256  # the sandbox router's, not the permissive default
    assert remote.expected_wait_s() == 0.0
    await remote.aclose()
    down = lc.RemoteGenerator("http://127.0.0.1:9", api_key="k")
    await down.refresh_expected_wait()
    assert down.expected_wait_s() is None
    await down.aclose()


async def test_a_request_the_server_cannot_serve_fails_before_sending(server: str) -> None:
    async with lc.RemoteGenerator(server, api_key="k") as remote:
        with pytest.raises(InvalidRequestError, match="width"):
            await remote.agenerate("a fox", width=128, height=128)  # below the sandbox router's 256


async def test_a_wrong_key_is_an_authentication_error(server: str) -> None:
    async with lc.RemoteGenerator(server, api_key="wrong", capabilities=lc.Capabilities()) as remote:
        with pytest.raises(AuthenticationError) as caught:
            await remote.agenerate("a fox", width=256, height=256)
    assert caught.value.status_code == 401 and caught.value.provider == "remote"


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (InvalidRequestError("bad seed", field="seed"), InvalidRequestError),
        (ContentFilteredError("blocked"), ContentFilteredError),
        (BudgetExceededError("spent"), BudgetExceededError),
        (RateLimitError("slow down", retry_after=4), RateLimitError),
        (AllProvidersFailedError("all failed", attempts=[], retryable=True), ProviderUnavailableError),
        (ProviderUnavailableError("down"), ProviderUnavailableError),
        (GenerationTimeoutError("slow"), GenerationTimeoutError),
    ],
)
async def test_server_errors_come_back_as_the_taxonomy(error: LightningError, raised: type[LightningError]) -> None:
    with ServerThread(create_app(Failing(error))) as url:
        async with lc.RemoteGenerator(url) as remote:
            with pytest.raises(raised) as caught:
                await remote.agenerate("a fox")
    got = caught.value
    assert type(got) is raised and got.provider == "remote" and got.request_id
    assert got.retryable == error.retryable
    if isinstance(got, InvalidRequestError):
        assert got.field == "seed"
    if isinstance(got, RateLimitError):
        assert got.retry_after == 4


def test_the_registry_and_the_package_know_it() -> None:
    from lightning_client.providers import generator_class

    assert generator_class("remote") is lc.RemoteGenerator
    with pytest.raises(InvalidRequestError, match="base_url"):
        lc.RemoteGenerator("gpu-box:8000")


def test_a_router_fails_over_from_a_stopped_server_to_fal() -> None:
    with Sandbox() as client_side:
        fal = lc.FalGenerator(api_key="k", base_url=client_side.fal_url)
        served = start_serve("--sandbox", "--api-key", "k")
        try:
            router = lc.Router([lc.RemoteGenerator(served.url, api_key="k"), fal], retries=0)
            first = router.generate("a fox", steps=2, width=512, height=512)
            assert first.provider == "remote"
        finally:
            served.stop()
        second = router.generate("a fox", steps=2, width=512, height=512)
        assert second.provider == "fal"
        failed = [a for a in router.ledger.records() if a.provider == "remote" and a.outcome == "failed"]
        assert len(failed) == 1 and failed[0].error_type == "ProviderUnavailableError"
        assert [a.outcome for a in second.attempts] == ["failed", "succeeded"]
        router.close()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.url}/healthz")
