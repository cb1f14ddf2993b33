"""Verify provider webhooks in a receiving application: signature and timestamp window.

```python
from lightning_client import webhooks

payload = webhooks.verify_replicate(request.headers, raw_body, secret)    # Standard Webhooks, HMAC-SHA256
payload = webhooks.verify_fal(request.headers, raw_body, jwks.get())      # Ed25519 against fal's JWKS
```

Both take the headers as any mapping (names case-insensitive, as web frameworks hand them over) or as
(name, value) pairs, and the raw body exactly as received: parsing and re-encoding the JSON first would
change the bytes that were signed. They return the decoded JSON body and raise `WebhookVerificationError`
when the signature does not match, a header is missing or the timestamp is more than `tolerance_s` from
now (a replayed delivery). The official Replicate client's validator never checks the timestamp.

`verify_fal` needs the `cryptography` package: `pip install "lightning-client[webhooks]"`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

__all__ = [
    "FAL_JWKS_URL",
    "JwksCache",
    "WebhookVerificationError",
    "fetch_jwks",
    "verify_fal",
    "verify_replicate",
]

#: Where fal publishes the public keys of its webhook signatures.
FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
#: fal says to cache its keys at most a day.
MAX_JWKS_AGE_S = 24 * 3600.0

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class WebhookVerificationError(ValueError):
    """A webhook delivery that must not be trusted: bad or missing signature, or a timestamp out of window."""


def verify_replicate(headers: Headers, body: bytes | str, secret: str, tolerance_s: float = 300) -> Any:
    """Check a Replicate delivery (Standard Webhooks) and return its decoded JSON body.

    Args:
        headers: the request headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
        body: the raw request body.
        secret: the signing secret, `whsec_...` (Replicate's `GET /v1/webhooks/default/secret`).
        tolerance_s: the largest accepted difference between `webhook-timestamp` and now, in seconds.

    Raises:
        WebhookVerificationError: the delivery is not authentic or is out of the time window.
        ValueError: `secret` is not a `whsec_` secret (a configuration error, not a bad delivery).
    """
    key = _secret_key(secret)
    found = _lower(headers)
    message_id = _header(found, "webhook-id")
    timestamp = _header(found, "webhook-timestamp")
    signatures = _header(found, "webhook-signature")
    _check_time(timestamp, "webhook-timestamp", tolerance_s)
    raw = _raw(body)
    expected = hmac.new(key, f"{message_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(candidate, expected):
            return _json(raw)
    raise WebhookVerificationError("no webhook-signature entry matches the body (v1, HMAC-SHA256)")


def verify_fal(
    headers: Headers, body: bytes | str, jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]], tolerance_s: float = 300
) -> Any:
    """Check a fal delivery (Ed25519) and return its decoded JSON body.

    Args:
        headers: the request headers (`X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp`, `-Signature`).
        body: the raw request body.
        jwks: fal's key set (`{"keys": [...]}`, e.g. `JwksCache.get()`), or a list of its keys; every
            Ed25519 key is tried.
        tolerance_s: the largest accepted difference between `X-Fal-Webhook-Timestamp` and now, in seconds.

    Raises:
        WebhookVerificationError: the delivery is not authentic or is out of the time window.
        ValueError: `jwks` holds no Ed25519 key.
        ImportError: `cryptography` is not installed.
    """
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('verify_fal needs cryptography: pip install "lightning-client[webhooks]"') from exc
    keys = _ed25519_keys(jwks)
    found = _lower(headers)
    request_id = _header(found, "x-fal-webhook-request-id")
    user_id = _header(found, "x-fal-webhook-user-id")
    timestamp = _header(found, "x-fal-webhook-timestamp")
    signature_hex = _header(found, "x-fal-webhook-signature")
    _check_time(timestamp, "X-Fal-Webhook-Timestamp", tolerance_s)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookVerificationError("X-Fal-Webhook-Signature is not hexadecimal") from None
    raw = _raw(body)
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(raw).hexdigest()]).encode()
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        except InvalidSignature:
            continue
        return _json(raw)
    raise WebhookVerificationError("X-Fal-Webhook-Signature matches none of the JWKS keys")


def fetch_jwks(url: str = FAL_JWKS_URL, *, timeout: float = 10.0, verify: Any = True) -> dict[str, Any]:
    """GET a JSON Web Key Set (fal's by default). `verify` is httpx's (True, a CA bundle path, an SSLContext)."""
    response = httpx.get(url, timeout=timeout, verify=verify, follow_redirects=False)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{url} did not answer a JSON Web Key Set ({{'keys': [...]}})")
    return document


class JwksCache:
    """fal's JWKS, fetched on first use and again once it is `max_age_s` old (at most 24 h, as fal advises).

    `get()` is thread-safe and blocking (call it from a worker thread in async code, or use `aget()`);
    `refresh()` fetches now, e.g. after a signature failed right after a key rotation.
    """

    def __init__(
        self, url: str = FAL_JWKS_URL, *, max_age_s: float = MAX_JWKS_AGE_S, timeout: float = 10.0, verify: Any = True
    ) -> None:
        if not 0 < max_age_s <= MAX_JWKS_AGE_S:
            raise ValueError(f"max_age_s must be more than 0 and at most {MAX_JWKS_AGE_S:.0f} seconds, got {max_age_s}")
        self.url = url
        self.max_age_s = max_age_s
        self._timeout = timeout
        self._verify = verify
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._fetched_at = 0.0

    def get(self) -> dict[str, Any]:
        """The key set, fetched when missing or stale."""
        with self._lock:
            if self._document is None or time.monotonic() - self._fetched_at >= self.max_age_s:
                self._store(fetch_jwks(self.url, timeout=self._timeout, verify=self._verify))
            assert self._document is not None
            return self._document

    async def aget(self) -> dict[str, Any]:
        """`get()` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.get)

    def refresh(self) -> dict[str, Any]:
        """Fetch the key set now."""
        document = fetch_jwks(self.url, timeout=self._timeout, verify=self._verify)
        with self._lock:
            self._store(document)
        return document

    def _store(self, document: dict[str, Any]) -> None:
        self._document, self._fetched_at = document, time.monotonic()


# -- helpers ----------------------------------------------------------------------------------------


def _lower(headers: Headers) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(name).lower(): str(value) for name, value in items}


def _header(headers: dict[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def _check_time(timestamp: str, name: str, tolerance_s: float) -> None:
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{name} is not a Unix time in seconds: {timestamp!r}") from None
    skew = time.time() - sent
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(f"{name} is {abs(skew):.0f} s {when} (tolerance {tolerance_s:g} s)")


def _raw(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the signed body is not JSON") from None


def _secret_key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ValueError("the Replicate webhook secret must start with 'whsec_' (GET /v1/webhooks/default/secret)")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Replicate webhook secret is not 'whsec_' followed by base64") from None


def _ed25519_keys(jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[bytes]:
    entries = jwks.get("keys", []) if isinstance(jwks, Mapping) else jwks
    keys = []
    for entry in entries if isinstance(entries, Sequence) else ():
        if not isinstance(entry, Mapping) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = str(entry.get("x", "")).rstrip("=")  # seen padded in fal's live document
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            keys.append(raw)
    if not keys:
        raise ValueError("the JWKS holds no Ed25519 key (kty 'OKP', crv 'Ed25519')")
    return keys
