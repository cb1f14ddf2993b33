"""Webhook delivery by the sandbox: events, filters, signing, retries, redirects, the `webhook_lost` fault."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from lightning_client import webhooks
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from tests.conftest import WebhookReceiver

VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
INPUT = {"prompt": "a lighthouse", "seed": 7, "width": 512, "height": 512}


def _create(rep: httpx.Client, **fields: Any) -> httpx.Response:
    return rep.post("/v1/predictions", json={"version": VERSION, "input": INPUT, **fields})


def _secret(rep: httpx.Client) -> str:
    key: str = rep.get("/v1/webhooks/default/secret").json()["key"]
    return key


def _wait_done(handle: ProviderHandle, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while handle.stats()["running"] + handle.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.02)


def test_completed_filter_delivers_one_signed_post(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(inference_s=0.2)
    created = _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["completed"])
    assert created.status_code == 201
    assert created.json()["webhook_events_filter"] == ["completed"]
    (delivery,) = webhook_receiver.wait_for(1)
    body = webhooks.verify_replicate(delivery.headers, delivery.body, _secret(rep))
    assert body["id"] == created.json()["id"] and body["status"] == "succeeded" and len(body["output"]) == 1
    assert body == rep.get(f"/v1/predictions/{body['id']}").json()  # the body is the GET-prediction body
    time.sleep(0.3)
    assert len(webhook_receiver.deliveries) == 1
    assert replicate_sandbox.stats()["webhooks"] == {"tries": 1, "delivered": 1, "failed": 0, "gave_up": 0, "lost": 0}


def test_default_filter_is_output_and_completed(rep: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    created = _create(rep, webhook=webhook_receiver.url).json()
    assert created["webhook_events_filter"] == ["output", "completed"]
    (delivery,) = webhook_receiver.wait_for(1)
    assert json.loads(delivery.body)["status"] == "succeeded"


def test_start_logs_and_completed_events_in_order(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(inference_s=1.2)
    _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["start", "logs", "completed"])
    _wait_done(replicate_sandbox)
    time.sleep(0.3)
    bodies = [json.loads(d.body) for d in webhook_receiver.deliveries]
    assert bodies[0]["status"] == "processing" and bodies[-1]["status"] == "succeeded"
    middle = bodies[1:-1]
    assert middle and all(b["status"] == "processing" for b in middle)  # logs events while it runs
    assert len(bodies) <= 2 + 1.2 / 0.5 + 1  # logs events are throttled to one per 0.5 s
    ids = [d.headers["webhook-id"] for d in webhook_receiver.deliveries]
    assert len(set(ids)) == len(ids)  # one id per delivery


def test_failing_receiver_gets_retries_with_the_same_id(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(webhook_backoff_s=0.05)
    webhook_receiver.statuses.extend([500, 302])  # a redirect is a failed try: not followed
    _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["completed"])
    deliveries = webhook_receiver.wait_for(3)
    assert {d.headers["webhook-id"] for d in deliveries} == {deliveries[0].headers["webhook-id"]}
    assert all(d.path == "/hook" for d in deliveries) and deliveries[0].body == deliveries[2].body
    time.sleep(0.3)
    assert len(webhook_receiver.deliveries) == 3
    stats = replicate_sandbox.stats()["webhooks"]
    assert (stats["tries"], stats["failed"], stats["delivered"]) == (3, 2, 1)


def test_default_backoff_gives_the_third_try_within_10_s(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses.extend([503, 503])
    _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["completed"])
    deliveries = webhook_receiver.wait_for(3, timeout=10)
    assert len(deliveries) == 3


def test_receiver_that_never_succeeds_is_given_up(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(webhook_backoff_s=0.01, webhook_tries=2)
    webhook_receiver.statuses.extend([500] * 5)
    _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["completed"])
    webhook_receiver.wait_for(2)
    deadline = time.monotonic() + 5
    while replicate_sandbox.stats()["webhooks"]["gave_up"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert replicate_sandbox.stats()["webhooks"] == {"tries": 2, "delivered": 0, "failed": 2, "gave_up": 1, "lost": 0}


def test_webhook_lost_fault_drops_deliveries(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    replicate_sandbox.configure(fault="webhook_lost")
    created = _create(rep, webhook=webhook_receiver.url, webhook_events_filter=["start", "completed"]).json()
    _wait_done(replicate_sandbox)
    time.sleep(0.2)
    assert rep.get(f"/v1/predictions/{created['id']}").json()["status"] == "succeeded"
    assert webhook_receiver.deliveries == []
    assert replicate_sandbox.stats()["webhooks"]["lost"] == 2


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"webhook": "http://example.com/hook"}, "webhook"),
        ({"webhook": "ftp://127.0.0.1/hook"}, "webhook"),
        ({"webhook": "not a url"}, "webhook"),
        ({"webhook": "https://example.com/hook", "webhook_events_filter": ["bogus"]}, "webhook_events_filter.0"),
        ({"webhook": "https://example.com/hook", "webhook_events_filter": "completed"}, "webhook_events_filter"),
        ({"webhook_completed": "http://example.com/hook"}, "webhook_completed"),
    ],
)
def test_bad_webhook_fields_are_422(
    rep: httpx.Client, replicate_sandbox: ProviderHandle, fields: dict[str, Any], field: str
) -> None:
    response = _create(rep, **fields)
    assert response.status_code == 422 and response.json()["title"] == "Input validation failed"
    assert field in [p["field"] for p in response.json()["invalid_fields"]]
    assert replicate_sandbox.stats()["created"] == 0


def test_https_webhook_and_loopback_http_are_accepted(rep: httpx.Client) -> None:
    assert _create(rep, webhook="https://example.com/hook").status_code == 201
    assert _create(rep, webhook="http://localhost:9/hook", webhook_events_filter=["start"]).status_code == 201


def test_legacy_webhook_completed_field(rep: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    _create(rep, webhook_completed=webhook_receiver.url)
    (delivery,) = webhook_receiver.wait_for(1)
    assert webhooks.verify_replicate(delivery.headers, delivery.body, _secret(rep))["status"] == "succeeded"


# -- fal ----------------------------------------------------------------------------------------------


def _jwks(sandbox: Sandbox) -> dict[str, Any]:
    return webhooks.fetch_jwks(f"{sandbox.fal_rest_url}/.well-known/jwks.json")


def test_fal_submit_with_webhook_delivers_the_result(
    fal: httpx.Client, lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    submitted = fal.post(
        "/fal-ai/fast-lightning-sdxl", params={"fal_webhook": webhook_receiver.url}, json={"prompt": "x", "seed": 3}
    ).json()
    (delivery,) = webhook_receiver.wait_for(1)
    body = webhooks.verify_fal(delivery.headers, delivery.body, _jwks(lightning_sandbox))
    assert body["request_id"] == body["gateway_request_id"] == submitted["request_id"]
    assert body["status"] == "OK" and body["payload"]["seed"] == 3 and len(body["payload"]["images"]) == 1
    assert delivery.headers["x-fal-webhook-request-id"] == submitted["request_id"]
    assert fal_sandbox.stats()["webhooks"]["delivered"] == 1


def test_fal_failed_request_delivers_an_error(
    fal: httpx.Client, lightning_sandbox: Sandbox, webhook_receiver: WebhookReceiver
) -> None:
    fal.post("/fal-ai/fast-lightning-sdxl", params={"fal_webhook": webhook_receiver.url}, json={"prompt": 5})
    (delivery,) = webhook_receiver.wait_for(1)
    body = webhooks.verify_fal(delivery.headers, delivery.body, _jwks(lightning_sandbox))
    assert body["status"] == "ERROR" and body["error"] == "Invalid status code: 422"
    assert body["payload"]["detail"][0]["loc"] == ["body", "prompt"]


def test_fal_retries_a_500_with_the_same_request_id(
    fal: httpx.Client, fal_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    fal_sandbox.configure(webhook_backoff_s=0.05)
    webhook_receiver.statuses.extend([500, 500])
    fal.post("/fal-ai/fast-lightning-sdxl", params={"fal_webhook": webhook_receiver.url}, json={"prompt": "x"})
    deliveries = webhook_receiver.wait_for(3)
    assert len({d.headers["x-fal-webhook-request-id"] for d in deliveries}) == 1
    assert len({d.body for d in deliveries}) == 1


def test_fal_webhook_lost_and_bad_url(
    fal: httpx.Client, fal_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> None:
    bad = fal.post("/fal-ai/fast-lightning-sdxl", params={"fal_webhook": "nope"}, json={"prompt": "x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
    fal_sandbox.configure(fault="webhook_lost")
    fal.post("/fal-ai/fast-lightning-sdxl", params={"fal_webhook": webhook_receiver.url}, json={"prompt": "x"})
    deadline = time.monotonic() + 5
    while fal_sandbox.stats()["webhooks"]["lost"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fal_sandbox.stats()["webhooks"]["lost"] == 1 and webhook_receiver.deliveries == []
