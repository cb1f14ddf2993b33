"""`lightning_client.webhooks`: verifying Replicate and fal deliveries made by the sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from lightning_client.webhooks import JwksCache, WebhookVerificationError, verify_fal, verify_replicate
from tests.conftest import Delivery, WebhookReceiver

VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"


@pytest.fixture
def replicate_delivery(replicate_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver) -> tuple[Delivery, str]:
    """One completed-event delivery from the sandbox, and the account's secret."""
    headers = {"Authorization": "Bearer r8_test"}
    with httpx.Client(base_url=replicate_sandbox.url, headers=headers) as client:
        client.post(
            "/v1/predictions",
            json={
                "version": VERSION,
                "input": {"prompt": "x", "width": 256, "height": 256},
                "webhook": webhook_receiver.url,
                "webhook_events_filter": ["completed"],
            },
        ).raise_for_status()
        secret = client.get("/v1/webhooks/default/secret").json()["key"]
    (delivery,) = webhook_receiver.wait_for(1)
    return delivery, secret


@pytest.fixture
def fal_delivery(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, webhook_receiver: WebhookReceiver
) -> tuple[Delivery, dict[str, Any]]:
    """One fal completion delivery from the sandbox, and the sandbox's JWKS."""
    httpx.post(
        f"{fal_sandbox.url}/fal-ai/fast-lightning-sdxl",
        params={"fal_webhook": webhook_receiver.url},
        json={"prompt": "x"},
        headers={"Authorization": "Key id:secret"},
    ).raise_for_status()
    (delivery,) = webhook_receiver.wait_for(1)
    return delivery, JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json").get()


def _resign(headers: dict[str, str], body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The same delivery signed with `secret` at `timestamp` (what a replayed or delayed one looks like)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {**headers, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}


def test_lc_webhooks_is_an_attribute() -> None:
    assert lc.webhooks.verify_replicate is verify_replicate and lc.webhooks.verify_fal is verify_fal


def test_webhooks_module_loads_cryptography_only_for_fal() -> None:
    code = (
        "import sys, lightning_client as lc; lc.webhooks.verify_replicate; "
        "print('cryptography' in sys.modules, 'lightning_client.webhooks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    light = subprocess.run(
        [sys.executable, "-c", "import sys, lightning_client; print('lightning_client.webhooks' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert light.stdout.strip() == "False"


def test_replicate_delivery_verifies_with_any_header_case(replicate_delivery: tuple[Delivery, str]) -> None:
    delivery, secret = replicate_delivery
    assert verify_replicate(delivery.headers, delivery.body, secret)["status"] == "succeeded"
    upper = {name.upper(): value for name, value in delivery.headers.items()}
    assert verify_replicate(upper, delivery.body.decode(), secret)["status"] == "succeeded"
    assert verify_replicate(list(upper.items()), delivery.body, secret)["status"] == "succeeded"


def test_replicate_changed_byte_old_timestamp_and_missing_header_are_rejected(
    replicate_delivery: tuple[Delivery, str],
) -> None:
    delivery, secret = replicate_delivery
    changed = bytearray(delivery.body)
    changed[len(changed) // 2] ^= 1
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_replicate(delivery.headers, bytes(changed), secret)
    old = _resign(delivery.headers, delivery.body, secret, int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_replicate(old, delivery.body, secret)
    assert verify_replicate(old, delivery.body, secret, tolerance_s=900)["status"] == "succeeded"
    future = _resign(delivery.headers, delivery.body, secret, int(time.time()) + 600)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_replicate(future, delivery.body, secret)
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify_replicate({k: v for k, v in delivery.headers.items() if k != "webhook-signature"}, delivery.body, secret)
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        verify_replicate(delivery.headers, delivery.body, other)
    with pytest.raises(ValueError, match="whsec_"):
        verify_replicate(delivery.headers, delivery.body, "not-a-secret")


def test_replicate_accepts_any_matching_entry_of_several(replicate_delivery: tuple[Delivery, str]) -> None:
    delivery, secret = replicate_delivery
    headers = {**delivery.headers, "webhook-signature": "v1,AAAA v2,xyz " + delivery.headers["webhook-signature"]}
    assert verify_replicate(headers, delivery.body, secret)["status"] == "succeeded"


def test_fal_delivery_verifies_and_tampering_is_rejected(fal_delivery: tuple[Delivery, dict[str, Any]]) -> None:
    delivery, jwks = fal_delivery
    assert verify_fal(delivery.headers, delivery.body, jwks)["status"] == "OK"
    # The live JWKS has been seen with padded `x`; a list of keys works too.
    padded = [{**key, "x": key["x"] + "=" * (-len(key["x"]) % 4)} for key in jwks["keys"]]
    upper = {name.upper(): value for name, value in delivery.headers.items()}
    assert verify_fal(upper, delivery.body, padded)["status"] == "OK"
    with pytest.raises(WebhookVerificationError, match="none of the JWKS keys"):
        verify_fal(delivery.headers, delivery.body.replace(b'"OK"', b'"ok"'), jwks)
    stale = {**delivery.headers, "x-fal-webhook-timestamp": str(int(time.time()) - 600)}
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_fal(stale, delivery.body, jwks)
    with pytest.raises(WebhookVerificationError, match="hexadecimal"):
        verify_fal({**delivery.headers, "x-fal-webhook-signature": "zz"}, delivery.body, jwks)
    with pytest.raises(ValueError, match="Ed25519"):
        verify_fal(delivery.headers, delivery.body, {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]})


def test_fal_signature_from_another_key_is_rejected(fal_delivery: tuple[Delivery, dict[str, Any]]) -> None:
    delivery, _ = fal_delivery
    with Sandbox(seed=99, replicate=False) as other:
        foreign = JwksCache(f"{other.fal_rest_url}/.well-known/jwks.json").get()
    with pytest.raises(WebhookVerificationError):
        verify_fal(delivery.headers, delivery.body, foreign)


def test_jwks_cache_fetches_once_and_refreshes(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    cache = JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json", max_age_s=3600)
    first = cache.get()
    assert cache.get() is first and fal_sandbox.stats()["requests"]["jwks"] == 1
    assert cache.refresh() == first and fal_sandbox.stats()["requests"]["jwks"] == 2
    with pytest.raises(ValueError, match="max_age_s"):
        JwksCache(max_age_s=2 * 24 * 3600)


async def test_jwks_cache_async(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    cache = JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    assert (await cache.aget())["keys"][0]["crv"] == "Ed25519"


def test_verify_errors_are_value_errors() -> None:
    assert issubclass(WebhookVerificationError, ValueError)
    body = json.dumps({"id": "x"}).encode()
    with pytest.raises(WebhookVerificationError, match="missing header webhook-id"):
        verify_replicate({}, body, "whsec_" + base64.b64encode(b"k" * 32).decode())
