"""Acme, a provider added by docs/new-provider.md alone, at parity over the sandbox (real HTTP on loopback):
generation and its mapping, cost, failures in the taxonomy, cancel of abandoned jobs, router failover."""

from __future__ import annotations

import asyncio
import time

import pytest
from acme_provider import PRICE, AcmeGenerator

import lightning_client as lc
from lightning_client.testing import Sandbox


def _request(**fields: object) -> lc.GenerationRequest:
    return lc.GenerationRequest(**{"prompt": "a red fox", "seed": 7, **fields})


async def test_generates_through_the_registry_with_seed_size_and_steps_mapped(acme_sandbox: Sandbox) -> None:
    async with lc.registry.generator_class("acme").for_sandbox(acme_sandbox) as gen:
        result = await gen.agenerate(_request(width=512, height=768, steps=2, num_images=2, output_format="jpeg"))
    assert result.provider == "acme" and result.seed == 7 and len(result.images) == 2
    assert {(i.width, i.height, i.content_type) for i in result.images} == {(512, 768, "image/jpeg")}
    [job] = acme_sandbox.provider("acme").jobs()
    assert job["status"] == "succeeded" and result.request_id == job["id"]
    assert job["input"] == {
        "model": "acme/lightning-xl",
        "prompt": "a red fox",
        "width": 512,
        "height": 768,
        "steps": 2,
        "seed": 7,
        "count": 2,
    }
    assert result.timings.inference_s is not None


async def test_the_cost_is_the_billed_images_times_the_price(acme_sandbox: Sandbox) -> None:
    async with AcmeGenerator.for_sandbox(acme_sandbox) as gen:
        result = await gen.agenerate(_request(num_images=3))
    assert result.cost.usd == pytest.approx(3 * PRICE.usd) and not result.cost.estimated
    assert "billed images 3" in result.cost.basis


@pytest.mark.parametrize(
    ("settings", "error", "status"),
    [
        ({"error_status": 401}, lc.AuthenticationError, 401),
        ({"error_status": 422}, lc.InvalidRequestError, 422),
        ({"fault": "job_error"}, lc.ProviderUnavailableError, None),
        ({"fault": "nsfw"}, lc.ContentFilteredError, None),
    ],
)
async def test_failures_map_to_the_taxonomy_with_provider_status_and_job_id(
    acme_sandbox: Sandbox, settings: dict[str, object], error: type[lc.LightningError], status: int | None
) -> None:
    acme_sandbox.provider("acme").configure(**settings)
    async with AcmeGenerator.for_sandbox(acme_sandbox) as gen:
        with pytest.raises(error) as info:
            await gen.agenerate(_request())
    assert info.value.provider == "acme" and info.value.status_code == status
    jobs = acme_sandbox.provider("acme").jobs()
    assert info.value.request_id == (jobs[0]["id"] if jobs else None)


async def test_no_key_is_an_authentication_error_before_anything_is_sent(
    acme_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    async with AcmeGenerator(base_url=acme_sandbox.url("acme")) as gen:
        with pytest.raises(lc.AuthenticationError, match="ACME_API_KEY"):
            await gen.agenerate(_request())
    assert acme_sandbox.provider("acme").stats()["requests"] == {}


async def test_an_abandoned_job_is_cancelled_and_priced(acme_sandbox: Sandbox) -> None:
    handle = acme_sandbox.provider("acme")
    handle.configure(inference_s=30)
    async with AcmeGenerator.for_sandbox(acme_sandbox) as gen:
        with pytest.raises(lc.GenerationTimeoutError) as info:
            await gen.agenerate(_request(timeout_s=0.5))
        task = asyncio.ensure_future(gen.agenerate(_request(seed=8)))
        for _ in range(500):  # until its job exists
            if len(handle.jobs()) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [job["status"] for job in handle.jobs()] == ["canceled", "canceled"]
    assert handle.stats()["requests"]["cancel"] == 2
    attempt = info.value.attempt
    assert attempt is not None and attempt.cost.usd == pytest.approx(PRICE.usd)  # it had started: billed


async def test_a_job_queued_when_cancelled_costs_nothing(acme_sandbox: Sandbox) -> None:
    acme_sandbox.provider("acme").configure(queue_s=30)
    async with AcmeGenerator.for_sandbox(acme_sandbox) as gen:
        with pytest.raises(lc.GenerationTimeoutError) as info:
            await gen.agenerate(_request(timeout_s=0.5))
    attempt = info.value.attempt
    assert attempt is not None and attempt.cost.usd == 0.0 and not attempt.cost.estimated


async def test_a_router_fails_over_from_acme_to_fal(acme_sandbox: Sandbox) -> None:
    acme_sandbox.provider("acme").configure(error_status=503)
    acme = AcmeGenerator.for_sandbox(acme_sandbox)
    fal = lc.FalGenerator.for_sandbox(acme_sandbox)
    started = time.monotonic()
    async with lc.Router([acme, fal], retries=0) as router:
        result = await router.agenerate(_request())
    assert result.provider == "fal" and time.monotonic() - started < 30
    assert [(a.provider, a.outcome) for a in result.attempts][-1] == ("fal", "succeeded")
    assert any(a.provider == "acme" and a.error_type == "ProviderUnavailableError" for a in result.attempts)
