"""Verify provider webhooks in a receiving application: signature, timestamp window, account, replays.

```python
from lightning_client import webhooks

guard = webhooks.ReplayGuard()                                                 # one per application
delivery = webhooks.verify_replicate(request.headers, raw_body, secret)        # Standard Webhooks, HMAC-SHA256
delivery = webhooks.verify_fal(request.headers, raw_body, jwks.get(), user_id="my-fal-user")  # Ed25519
if guard.accept(delivery):                                                     # False for a retry or replay
    ...
```

Both take the headers as any mapping (names case-insensitive, as web frameworks hand them over) or as
(name, value) pairs, and the raw body exactly as received: parsing and re-encoding the JSON first would
change the bytes that were signed. They return a `WebhookDelivery`: the decoded JSON body (a dict) that
also carries the signed id and timestamp. They raise `WebhookVerificationError` when the signature does not
match, a header is missing, the timestamp is more than `tolerance_s` from now (a late replay) or, for fal,
the delivery is for another account. The official Replicate client's validator never checks the timestamp.

`verify_fal` needs the `cryptography` package: `pip install "lightning-client[webhooks]"`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import httpx

from lightning_client._log import get_logger

__all__ = [
    "FAL_JWKS_URL",
    "JwksCache",
    "MemoryReplayStore",
    "ReplayGuard",
    "ReplayStore",
    "WebhookDelivery",
    "WebhookVerificationError",
    "fetch_jwks",
    "verify_fal",
    "verify_replicate",
]

log = get_logger("lightning_client.webhooks")

#: Where fal publishes the public keys of its webhook signatures.
FAL_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
#: fal says to cache its keys at most a day.
MAX_JWKS_AGE_S = 24 * 3600.0
#: The default window of `webhook-timestamp` / `X-Fal-Webhook-Timestamp` around now (fal's and Standard
#: Webhooks' advice).
DEFAULT_TOLERANCE_S = 300.0

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class WebhookVerificationError(ValueError):
    """A webhook delivery that must not be trusted: bad or missing signature, timestamp out of window, or (fal)
    a delivery for another account."""


class WebhookDelivery(dict[str, Any]):
    """A verified delivery: its decoded JSON body (this dict) and what the signature covered besides it.

    Attributes:
        provider: `"replicate"` or `"fal"`.
        id: `webhook-id` (Replicate: the same on every retry of one delivery) or `X-Fal-Webhook-Request-Id`.
        timestamp: the signed send time, Unix seconds.
        user_id: `X-Fal-Webhook-User-Id` (fal), None for Replicate.
    """

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        provider: Literal["replicate", "fal"],
        id: str,
        timestamp: int,
        user_id: str | None = None,
    ) -> None:
        super().__init__(body)
        self.provider: Literal["replicate", "fal"] = provider
        self.id = id
        self.timestamp = timestamp
        self.user_id = user_id

    def __repr__(self) -> str:
        return (
            f"WebhookDelivery(provider={self.provider!r}, id={self.id!r}, timestamp={self.timestamp}, "
            f"user_id={self.user_id!r}, body={dict.__repr__(self)})"
        )


def verify_replicate(
    headers: Headers, body: bytes | str, secret: str, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> WebhookDelivery:
    """Check a Replicate delivery (Standard Webhooks) and return it: the decoded body with `id` and `timestamp`.

    Args:
        headers: the request headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
        body: the raw request body.
        secret: the signing secret, `whsec_...` (Replicate's `GET /v1/webhooks/default/secret`).
        tolerance_s: the largest accepted difference between `webhook-timestamp` and now, in seconds
            (finite, more than 0).

    Raises:
        WebhookVerificationError: the delivery is not authentic or is out of the time window.
        ValueError: `secret` is not a `whsec_` secret, or `tolerance_s` is invalid (configuration errors,
            not bad deliveries).
    """
    _check_tolerance(tolerance_s)
    key = _secret_key(secret)
    found = _lower(headers)
    message_id = _header(found, "webhook-id")
    timestamp = _header(found, "webhook-timestamp")
    signatures = _header(found, "webhook-signature")
    sent = _check_time(timestamp, "webhook-timestamp", tolerance_s)
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
            return WebhookDelivery(_json(raw), provider="replicate", id=message_id, timestamp=sent)
    raise WebhookVerificationError("no webhook-signature entry matches the body (v1, HMAC-SHA256)")


def verify_fal(
    headers: Headers,
    body: bytes | str,
    jwks: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    user_id: str | None = None,
) -> WebhookDelivery:
    """Check a fal delivery (Ed25519) and return it: the decoded body with `id`, `timestamp` and `user_id`.

    Args:
        headers: the request headers (`X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp`, `-Signature`).
        body: the raw request body.
        jwks: fal's key set (`{"keys": [...]}`, e.g. `JwksCache.get()`), or a list of its keys; every
            Ed25519 key is tried.
        tolerance_s: the largest accepted difference between `X-Fal-Webhook-Timestamp` and now, in seconds
            (finite, more than 0).
        user_id: your fal user id: a delivery signed for any other account is refused. fal signs every
            account's deliveries with the same keys, so without it a job someone else created, with your
            receiver as its webhook, verifies too.

    Raises:
        WebhookVerificationError: the delivery is not authentic, is out of the time window or is for
            another account.
        ValueError: `jwks` holds no Ed25519 key, `tolerance_s` is invalid, or `user_id` is empty.
        ImportError: `cryptography` is not installed.
    """
    _check_tolerance(tolerance_s)
    if user_id is not None and not (isinstance(user_id, str) and user_id.strip()):
        raise ValueError(f"user_id must be your fal user id (a non-empty string) or None, got {user_id!r}")
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('verify_fal needs cryptography: pip install "lightning-client[webhooks]"') from exc
    keys = _ed25519_keys(jwks)
    found = _lower(headers)
    request_id = _header(found, "x-fal-webhook-request-id")
    sender = _header(found, "x-fal-webhook-user-id")
    timestamp = _header(found, "x-fal-webhook-timestamp")
    signature_hex = _header(found, "x-fal-webhook-signature")
    sent = _check_time(timestamp, "X-Fal-Webhook-Timestamp", tolerance_s)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookVerificationError("X-Fal-Webhook-Signature is not hexadecimal") from None
    raw = _raw(body)
    message = "\n".join([request_id, sender, timestamp, hashlib.sha256(raw).hexdigest()]).encode()
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        except InvalidSignature:
            continue
        if user_id is not None and not hmac.compare_digest(sender.encode(), user_id.strip().encode()):
            raise WebhookVerificationError(f"X-Fal-Webhook-User-Id {sender!r} is another fal account, not user_id")
        return WebhookDelivery(_json(raw), provider="fal", id=request_id, timestamp=sent, user_id=sender)
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

    When a fetch fails (the endpoint is down, answers an error or not a key set), the last key set keeps
    being served until it is `max_age_s + stale_grace_s` old, with a warning in the log; after that the
    failure is raised. Fetches, successful or not, are at most one per `min_refresh_interval_s`: a
    `refresh()` asked for sooner (say, after each of many forged deliveries) returns the cached set, and
    while the endpoint is down the last failure is raised again without a new request.

    `get()` and `refresh()` are thread-safe and blocking (from async code use `aget()` / `arefresh()`);
    call `refresh()` when a signature fails right after fal may have rotated its keys.
    """

    def __init__(
        self,
        url: str = FAL_JWKS_URL,
        *,
        max_age_s: float = MAX_JWKS_AGE_S,
        stale_grace_s: float = 3600.0,
        min_refresh_interval_s: float = 60.0,
        timeout: float = 10.0,
        verify: Any = True,
    ) -> None:
        if not 0 < max_age_s <= MAX_JWKS_AGE_S:
            raise ValueError(f"max_age_s must be more than 0 and at most {MAX_JWKS_AGE_S:.0f} seconds, got {max_age_s}")
        if not 0 <= stale_grace_s <= MAX_JWKS_AGE_S:
            raise ValueError(f"stale_grace_s must be 0 to {MAX_JWKS_AGE_S:.0f} seconds, got {stale_grace_s}")
        if not 0 <= min_refresh_interval_s <= max_age_s:
            raise ValueError(
                f"min_refresh_interval_s must be 0 to max_age_s ({max_age_s:g}) seconds, got {min_refresh_interval_s}"
            )
        self.url = url
        self.max_age_s = max_age_s
        self.stale_grace_s = stale_grace_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self._timeout = timeout
        self._verify = verify
        self._lock = threading.Lock()  # held while fetching: one fetch at a time, concurrent callers wait
        self._document: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._failure: Exception | None = None  # of the last fetch, when it failed

    def get(self) -> dict[str, Any]:
        """The key set, fetched when missing or `max_age_s` old (stale within the grace period on failure)."""
        with self._lock:
            if self._document is None or time.monotonic() - self._fetched_at >= self.max_age_s:
                self._fetch()
            return self._usable()

    async def aget(self) -> dict[str, Any]:
        """`get()` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.get)

    def refresh(self) -> dict[str, Any]:
        """Fetch the key set now, unless the last fetch was less than `min_refresh_interval_s` ago."""
        with self._lock:
            self._fetch()
            return self._usable()

    async def arefresh(self) -> dict[str, Any]:
        """`refresh()` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.refresh)

    def _fetch(self) -> None:
        now = time.monotonic()
        if self._attempted_at is not None and now - self._attempted_at < self.min_refresh_interval_s:
            return
        self._attempted_at = now
        try:
            document = fetch_jwks(self.url, timeout=self._timeout, verify=self._verify)
        except (httpx.HTTPError, ValueError) as exc:
            self._failure = exc
            if self._document is not None:
                log.warning(
                    "fal's JWKS at %s could not be fetched (%s); the key set fetched %.0f s ago stays in use "
                    "for at most %.0f s more",
                    self.url,
                    str(exc).splitlines()[0] or type(exc).__name__,
                    now - self._fetched_at,
                    max(0.0, self.max_age_s + self.stale_grace_s - (now - self._fetched_at)),
                )
            return
        self._document, self._fetched_at, self._failure = document, now, None

    def _usable(self) -> dict[str, Any]:
        if self._document is not None and (
            self._failure is None or time.monotonic() - self._fetched_at < self.max_age_s + self.stale_grace_s
        ):
            return self._document
        # The last fetch failed: without a key set, no other outcome is possible.
        failure = self._failure or ValueError(f"no key set fetched from {self.url}")
        raise failure.with_traceback(None)


class ReplayStore(Protocol):
    """Where a `ReplayGuard` remembers the delivery ids it has seen.

    The in-memory `MemoryReplayStore` serves one process; for several, implement `add` on a shared store
    with one atomic step, e.g. Redis `SET key 1 NX EXAT expires_at` or an `INSERT` on a unique key that
    ignores conflicts (and deletes expired rows now and then).
    """

    def add(self, key: str, expires_at: float) -> bool:
        """Remember `key` until `expires_at` (Unix seconds); False when it is already remembered, unexpired."""
        ...


class MemoryReplayStore:
    """A `ReplayStore` in this process's memory, holding at most `max_entries` unexpired ids (thread-safe).

    Expired ids are dropped as new ones arrive. When more than `max_entries` distinct deliveries arrive
    within one window, the ids that expire soonest are forgotten first (so size it above your peak number
    of deliveries per `tolerance_s`).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an integer of at least 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expires_at, key), the same entries as _expiry

    def add(self, key: str, expires_at: float) -> bool:
        """See `ReplayStore.add`."""
        with self._lock:
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                del self._expiry[heapq.heappop(self._heap)[1]]
            if key in self._expiry:
                return False
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            while len(self._expiry) > self.max_entries:
                del self._expiry[heapq.heappop(self._heap)[1]]
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


class ReplayGuard:
    """De-duplicates verified deliveries by provider and id within the timestamp window.

    A captured delivery replayed within `tolerance_s` carries a valid signature and a fresh enough timestamp,
    so the verifiers accept it, and providers retry deliveries with the same id: `accept(delivery)` is True
    only the first time an id is seen. An id is remembered until its signed timestamp is `tolerance_s` old,
    when the verifiers refuse it anyway, so use the same `tolerance_s` here as in `verify_*`.
    """

    def __init__(
        self,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        max_entries: int = 100_000,
        store: ReplayStore | None = None,
    ) -> None:
        """`store` replaces the in-memory `MemoryReplayStore(max_entries)` (e.g. with one shared by processes)."""
        _check_tolerance(tolerance_s)
        self.tolerance_s = tolerance_s
        self.store: ReplayStore = store if store is not None else MemoryReplayStore(max_entries)

    def accept(self, delivery: WebhookDelivery) -> bool:
        """True the first time this delivery's id is seen; False for a retry or replay of one already seen,
        and for a delivery older than `tolerance_s` (which the guard could not de-duplicate)."""
        if not isinstance(delivery, WebhookDelivery):
            raise TypeError(
                f"accept() takes what verify_replicate or verify_fal returned, got {type(delivery).__name__}"
            )
        expires_at = delivery.timestamp + self.tolerance_s
        if expires_at <= time.time():
            return False
        return self.store.add(f"{delivery.provider}:{delivery.id}", expires_at)


# -- helpers ----------------------------------------------------------------------------------------


def _lower(headers: Headers) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(name).lower(): str(value) for name, value in items}


def _header(headers: dict[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def _check_tolerance(tolerance_s: float) -> None:
    """Refuse a window that would accept any timestamp (nan, inf) or none (0, negative)."""
    number = isinstance(tolerance_s, (int, float)) and not isinstance(tolerance_s, bool)
    if not number or not math.isfinite(tolerance_s) or tolerance_s <= 0:
        raise ValueError(f"tolerance_s must be a finite number of seconds more than 0, got {tolerance_s!r}")


def _check_time(timestamp: str, name: str, tolerance_s: float) -> int:
    """The signed send time, once it is within `tolerance_s` of now."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookVerificationError(f"{name} is not a Unix time in seconds: {timestamp!r}")
    sent = int(timestamp)
    skew = time.time() - sent
    if not abs(skew) <= tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise WebhookVerificationError(f"{name} is {abs(skew):.0f} s {when} (tolerance {tolerance_s:g} s)")
    return sent


def _raw(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the signed body is not JSON") from None
    if not isinstance(decoded, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return decoded


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
