"""`lightning_client.webhooks`: verifying Replicate and fal deliveries made by the sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.testing._webhooks import FAL_USER_ID
from lightning_client.testing.sandbox import ProviderHandle, Sandbox
from lightning_client.webhooks import (
    JwksCache,
    MemoryReplayStore,
    ReplayGuard,
    WebhookDelivery,
    WebhookVerificationError,
    verify_fal,
    verify_replicate,
)
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
    return _delivery_with(webhook_receiver, "webhook-id"), secret


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
    delivery = _delivery_with(webhook_receiver, "x-fal-webhook-request-id")
    return delivery, JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json").get()


def _delivery_with(receiver: WebhookReceiver, header: str) -> Delivery:
    """The first delivery carrying `header` (a test may receive both providers' deliveries)."""
    count = 1
    while True:
        found = [d for d in receiver.wait_for(count) if header in d.headers]
        if found:
            return found[0]
        count += 1


def _resign(headers: dict[str, str], body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The same delivery signed with `secret` at `timestamp` (what a replayed or delayed one looks like)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {**headers, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}


def test_lc_webhooks_is_an_attribute() -> None:
    assert lc.webhooks.verify_replicate is verify_replicate and lc.webhooks.verify_fal is verify_fal
    assert lc.webhooks.ReplayGuard is ReplayGuard


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
    url = f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json"
    cache = JwksCache(url, max_age_s=3600, min_refresh_interval_s=0)
    first = cache.get()
    assert cache.get() is first and fal_sandbox.stats()["requests"]["jwks"] == 1
    assert cache.refresh() == first and fal_sandbox.stats()["requests"]["jwks"] == 2
    with pytest.raises(ValueError, match="max_age_s"):
        JwksCache(max_age_s=2 * 24 * 3600)
    with pytest.raises(ValueError, match="stale_grace_s"):
        JwksCache(stale_grace_s=-1)
    with pytest.raises(ValueError, match="min_refresh_interval_s"):
        JwksCache(max_age_s=60, min_refresh_interval_s=120)


def test_jwks_refreshes_are_rate_limited(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    """A receiver that refreshes after every failed signature must not fetch once per forged delivery."""
    cache = JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    first = cache.get()
    for _ in range(50):
        assert cache.refresh() is first
    assert fal_sandbox.stats()["requests"]["jwks"] == 1


def test_jwks_endpoint_down_serves_the_stale_key_set_within_the_grace_period(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, fal_delivery: tuple[Delivery, dict[str, Any]]
) -> None:
    delivery, _ = fal_delivery
    url = f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json"
    fetched = fal_sandbox.stats()["requests"]["jwks"]
    cache = JwksCache(url, max_age_s=0.001, stale_grace_s=3600, min_refresh_interval_s=0)
    first = cache.get()
    fal_sandbox.configure(error_status=503)
    time.sleep(0.01)  # the key set is now older than max_age_s: every get() tries the endpoint
    assert cache.get() is first and cache.refresh() is first
    assert verify_fal(delivery.headers, delivery.body, cache.get())["status"] == "OK"
    assert fal_sandbox.stats()["requests"]["jwks"] == fetched + 4
    expired = JwksCache(url, max_age_s=0.001, stale_grace_s=0, min_refresh_interval_s=0)
    fal_sandbox.configure(error_status=None)
    expired.get()
    fal_sandbox.configure(error_status=503)
    time.sleep(0.01)
    with pytest.raises(httpx.HTTPStatusError):  # past the grace period the failure shows
        expired.get()


def test_jwks_endpoint_down_without_a_key_set_is_not_asked_again_at_once(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle
) -> None:
    fal_sandbox.configure(error_status=503)
    cache = JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    for _ in range(50):
        with pytest.raises(httpx.HTTPStatusError, match="503"):
            cache.get()
        with pytest.raises(httpx.HTTPStatusError, match="503"):
            cache.refresh()
    assert fal_sandbox.stats()["requests"]["jwks"] == 1


async def test_jwks_cache_async(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    cache = JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    assert (await cache.aget())["keys"][0]["crv"] == "Ed25519"


def test_verify_errors_are_value_errors() -> None:
    assert issubclass(WebhookVerificationError, ValueError)
    body = json.dumps({"id": "x"}).encode()
    with pytest.raises(WebhookVerificationError, match="missing header webhook-id"):
        verify_replicate({}, body, "whsec_" + base64.b64encode(b"k" * 32).decode())
    headers = {"webhook-id": "msg_x", "webhook-timestamp": "9" * 5000, "webhook-signature": "v1,AAAA"}
    with pytest.raises(WebhookVerificationError, match="not a Unix time"):  # not int()'s own digit-limit error
        verify_replicate(headers, body, "whsec_" + base64.b64encode(b"k" * 32).decode())


def test_verifiers_return_the_signed_id_and_timestamp_with_the_body(
    replicate_delivery: tuple[Delivery, str], fal_delivery: tuple[Delivery, dict[str, Any]]
) -> None:
    delivery, secret = replicate_delivery
    verified = verify_replicate(delivery.headers, delivery.body, secret)
    assert isinstance(verified, WebhookDelivery) and isinstance(verified, dict)
    assert verified == json.loads(delivery.body) and json.loads(json.dumps(verified)) == verified
    assert (verified.provider, verified.id, verified.timestamp, verified.user_id) == (
        "replicate",
        delivery.headers["webhook-id"],
        int(delivery.headers["webhook-timestamp"]),
        None,
    )
    assert "WebhookDelivery(provider='replicate'" in repr(verified)
    fal, jwks = fal_delivery
    verified = verify_fal(fal.headers, fal.body, jwks)
    assert verified["payload"]["images"] and verified.provider == "fal"
    assert (verified.id, verified.timestamp, verified.user_id) == (
        fal.headers["x-fal-webhook-request-id"],
        int(fal.headers["x-fal-webhook-timestamp"]),
        FAL_USER_ID,
    )


def test_fal_user_id_refuses_deliveries_for_another_account(fal_delivery: tuple[Delivery, dict[str, Any]]) -> None:
    delivery, jwks = fal_delivery
    assert verify_fal(delivery.headers, delivery.body, jwks, user_id=FAL_USER_ID).user_id == FAL_USER_ID
    with pytest.raises(WebhookVerificationError, match="another fal account"):
        verify_fal(delivery.headers, delivery.body, jwks, user_id="my-own-account")
    with pytest.raises(ValueError, match="user_id"):
        verify_fal(delivery.headers, delivery.body, jwks, user_id="")


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -math.inf, -1, 0])
def test_invalid_tolerances_are_configuration_errors(
    tolerance: float, replicate_delivery: tuple[Delivery, str], fal_delivery: tuple[Delivery, dict[str, Any]]
) -> None:
    delivery, secret = replicate_delivery
    ten_years_old = _resign(delivery.headers, delivery.body, secret, int(time.time()) - 10 * 365 * 86400)
    with pytest.raises(ValueError, match="tolerance_s must be a finite number") as raised:
        verify_replicate(ten_years_old, delivery.body, secret, tolerance_s=tolerance)
    assert not isinstance(raised.value, WebhookVerificationError)
    fal, jwks = fal_delivery
    with pytest.raises(ValueError, match="tolerance_s must be a finite number") as raised:
        verify_fal(fal.headers, fal.body, jwks, tolerance_s=tolerance)
    assert not isinstance(raised.value, WebhookVerificationError)
    with pytest.raises(ValueError, match="tolerance_s"):
        ReplayGuard(tolerance_s=tolerance)


def test_replay_guard_accepts_each_delivery_once(
    replicate_delivery: tuple[Delivery, str], fal_delivery: tuple[Delivery, dict[str, Any]]
) -> None:
    delivery, secret = replicate_delivery
    guard = ReplayGuard()
    first = verify_replicate(delivery.headers, delivery.body, secret)
    assert guard.accept(first)
    assert not guard.accept(verify_replicate(delivery.headers, delivery.body, secret))  # replayed as captured
    retry = _resign(delivery.headers, delivery.body, secret, int(time.time()) + 1)  # a retry: same id, new time
    assert not guard.accept(verify_replicate(retry, delivery.body, secret))
    other = {**delivery.headers, "webhook-id": "msg_other"}
    assert guard.accept(
        verify_replicate(_resign(other, delivery.body, secret, int(time.time())), delivery.body, secret)
    )
    fal, jwks = fal_delivery
    assert guard.accept(verify_fal(fal.headers, fal.body, jwks))
    assert not guard.accept(verify_fal(fal.headers, fal.body, jwks))
    # Older than the guard's window: verified with a wider tolerance, but the guard cannot de-duplicate it.
    old = _resign(delivery.headers, delivery.body, secret, int(time.time()) - 600)
    assert not ReplayGuard().accept(verify_replicate(old, delivery.body, secret, tolerance_s=900))
    with pytest.raises(TypeError, match="verify_replicate or verify_fal"):
        guard.accept({"id": "x"})  # type: ignore[arg-type]


def test_replay_guard_uses_a_pluggable_store(replicate_delivery: tuple[Delivery, str]) -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float]] = []

        def add(self, key: str, expires_at: float) -> bool:
            self.calls.append((key, expires_at))
            return len(self.calls) == 1

    delivery, secret = replicate_delivery
    store = Recording()
    guard = ReplayGuard(tolerance_s=60, store=store)
    verified = verify_replicate(delivery.headers, delivery.body, secret)
    assert guard.accept(verified) and not guard.accept(verified)
    assert store.calls[0] == (f"replicate:{verified.id}", verified.timestamp + 60)


def test_memory_replay_store_is_bounded_and_forgets_expired_ids() -> None:
    store = MemoryReplayStore(max_entries=2)
    now = time.time()
    assert store.add("a", now + 100) and store.add("b", now + 200) and store.add("c", now + 300)
    assert len(store) == 2 and store.add("a", now + 100)  # "a" expired soonest: forgotten first
    assert not store.add("c", now + 300)
    expired = MemoryReplayStore()
    assert expired.add("x", now - 1) and expired.add("x", now + 100)  # an expired id counts as new
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayStore(max_entries=0)
