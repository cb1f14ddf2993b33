"""Hosted generators' `deployment`, `webhook` and `webhook_events` options, and the Replicate seed cross-check
against the sandbox's live logs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client import webhooks
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from tests.conftest import WebhookReceiver


def small(**fields: Any) -> lc.GenerationRequest:
    return lc.GenerationRequest(prompt="a lighthouse", width=256, height=256, seed=5, **fields)


def _listed(handle: ProviderHandle) -> list[dict[str, Any]]:
    response = httpx.get(f"{handle.url}/v1/predictions", headers={"Authorization": "Bearer r8_test"})
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def test_replicate_generator_serves_through_a_deployment(replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(deployments={"acme/sdxl-lightning": {}})
    gen = lc.ReplicateGenerator(api_key="r8_test", base_url=replicate_sandbox.url, deployment="acme/sdxl-lightning")
    assert "deployment='acme/sdxl-lightning'" in repr(gen)
    async with gen:
        result = await gen.agenerate(small())
    assert len(result.images) == 1 and result.seed == 5
    (prediction,) = await asyncio.to_thread(_listed, replicate_sandbox)
    assert prediction["deployment"] == "acme/sdxl-lightning" and "version" not in prediction["input"]


async def test_unknown_deployment_is_a_404_error(replicate_sandbox: ProviderHandle) -> None:
    async with lc.ReplicateGenerator(api_key="r8_test", base_url=replicate_sandbox.url, deployment="acme/none") as gen:
        with pytest.raises(lc.LightningError) as caught:
            await gen.agenerate(small())
    assert caught.value.status_code == 404 and caught.value.provider == "replicate"
    assert replicate_sandbox.stats()["created"] == 0


async def test_replicate_webhook_options_pass_through_and_the_generator_still_waits(
    replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    gen = lc.ReplicateGenerator(
        api_key="r8_test", base_url=replicate_sandbox.url, webhook=webhook_receiver.url, webhook_events=["completed"]
    )
    async with gen:
        result = await gen.agenerate(small())
    assert len(result.images) == 1
    (delivery,) = await asyncio.to_thread(webhook_receiver.wait_for, 1)
    async with httpx.AsyncClient(headers={"Authorization": "Bearer r8_test"}) as client:
        secret = (await client.get(f"{replicate_sandbox.url}/v1/webhooks/default/secret")).json()["key"]
    body = webhooks.verify_replicate(delivery.headers, delivery.body, secret)
    assert body["id"] == result.attempts[-1].request_id and body["webhook_events_filter"] == ["completed"]


async def test_fal_webhook_option(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    gen = lc.FalGenerator(
        api_key="id:secret",
        base_url=lightning_sandbox.fal_url,
        run_url=lightning_sandbox.fal_run_url,
        rest_url=lightning_sandbox.fal_rest_url,
        webhook=webhook_receiver.url,
        webhook_events=["completed"],
    )
    async with gen:
        result = await gen.agenerate(small())
    (delivery,) = await asyncio.to_thread(webhook_receiver.wait_for, 1)
    jwks = await webhooks.JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json").aget()
    body = webhooks.verify_fal(delivery.headers, delivery.body, jwks)
    assert body["status"] == "OK" and body["request_id"] == result.attempts[-1].request_id


async def test_lost_webhooks_do_not_affect_the_generator(
    replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(fault="webhook_lost")
    async with lc.ReplicateGenerator(
        api_key="r8_test", base_url=replicate_sandbox.url, webhook=webhook_receiver.url
    ) as gen:
        result = await gen.agenerate(small())
    assert len(result.images) == 1
    for _ in range(250):  # the sandbox drops the completion delivery as the prediction ends
        if replicate_sandbox.stats()["webhooks"]["lost"]:
            break
        await asyncio.sleep(0.02)
    assert replicate_sandbox.stats()["webhooks"]["lost"] == 1 and webhook_receiver.deliveries == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"webhook": "http://example.com/hook"}, "webhook must be an https:// URL"),
        ({"webhook": "https://example.com/h", "webhook_events": ["bogus"]}, "start, output, logs, completed"),
        ({"webhook": "https://example.com/h", "webhook_events": []}, "non-empty"),
        ({"webhook_events": ["completed"]}, "webhook_events needs webhook"),
        ({"deployment": "no-slash"}, "owner/name"),
    ],
)
def test_replicate_option_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lc.ReplicateGenerator(api_key="r8_test", **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"webhook": "ftp://example.com/hook"}, "http:// or https://"),
        ({"webhook": "https://example.com/h", "webhook_events": ["start"]}, "only one event"),
        ({"webhook": "https://example.com/h", "mode": "run"}, "mode='queue'"),
        ({"webhook_events": ["completed"]}, "webhook_events needs webhook"),
    ],
)
def test_fal_option_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lc.FalGenerator(api_key="id:secret", **options)


async def test_replicate_seed_cross_check_reads_the_live_logs(replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0.3)
    async with lc.ReplicateGenerator(api_key="r8_test", base_url=replicate_sandbox.url, wait_s=0) as gen:
        matching = await gen.agenerate(small())
        assert matching.seed == 5 and not [w for w in matching.warnings if w.setting == "seed"]
        # provider_options cannot force another seed: the request's is sent, and the logs agree.
        forced = await gen.agenerate(small(provider_options={"replicate": {"seed": 77}}))
    assert forced.seed == 5
    assert [(w.kind, w.setting) for w in forced.warnings] == [("ignored", "provider_options.replicate.seed")]
