"""Webhook delivery for the emulated providers: signing (Standard Webhooks, Ed25519), retries, counters.

Deliveries run as tasks on the sandbox loop. Each one POSTs fixed body bytes and keeps its webhook id on
every try; it is signed again per try, with the time of that try (what Standard Webhooks senders do, so a
late retry is still inside a receiver's timestamp window). Redirects are not followed: a 3xx is a failed
try, like any non-2xx answer or a connection error, and is retried after `webhook_backoff_s`, doubled for
each further try, up to `webhook_tries` tries in all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from lightning_client.testing._behaviour import Behaviour

__all__ = ["FalSigner", "ReplicateSigner", "WebhookSender"]

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijkmnpqrstuvwxyz"
USER_AGENT = "lightning-client-sandbox-webhooks/1"
#: The fal user id the sandbox signs with (`X-Fal-Webhook-User-Id`).
FAL_USER_ID = "sandbox-user"


def webhook_id(bits: int) -> str:
    """A Standard Webhooks style message id (`msg_` and 27 characters)."""
    chars = []
    for _ in range(27):
        bits, index = divmod(bits, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[index])
    return "msg_" + "".join(chars)


class ReplicateSigner:
    """Signs Replicate deliveries per Standard Webhooks with a `whsec_` secret."""

    def __init__(self, seed: int) -> None:
        key = hashlib.sha256(f"{seed}:replicate-webhook-secret".encode()).digest()
        self.secret = "whsec_" + base64.b64encode(key).decode()
        self._key = key

    def headers(self, message_id: str, body: bytes) -> dict[str, str]:
        """`webhook-id`, `webhook-timestamp` (now) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`)."""
        timestamp = str(int(time.time()))
        signed = f"{message_id}.{timestamp}.".encode() + body
        signature = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        return {"webhook-id": message_id, "webhook-timestamp": timestamp, "webhook-signature": f"v1,{signature}"}


class FalSigner:
    """Signs fal deliveries with an Ed25519 key (derived from the sandbox seed) and publishes it as JWKS."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._key: Any = None  # created on first use: `cryptography` is imported only when needed

    def _private_key(self) -> Any:
        if self._key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            raw = hashlib.sha256(f"{self._seed}:fal-webhook-key".encode()).digest()
            self._key = Ed25519PrivateKey.from_private_bytes(raw)
        return self._key

    def jwks(self) -> dict[str, Any]:
        """The public key as a JSON Web Key Set (OKP / Ed25519, `x` base64url without padding)."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = self._private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(public).decode().rstrip("=")
        kid = hashlib.sha256(public).hexdigest()[:16]
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]}

    def headers(self, request_id: str, body: bytes) -> dict[str, str]:
        """fal's `X-Fal-Webhook-*` headers: the hex signature of request id, user id, timestamp, body SHA-256."""
        timestamp = str(int(time.time()))
        message = "\n".join([request_id, FAL_USER_ID, timestamp, hashlib.sha256(body).hexdigest()]).encode()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": FAL_USER_ID,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": self._private_key().sign(message).hex(),
        }


@dataclass(frozen=True)
class _Delivery:
    url: str
    body: bytes
    sign: Callable[[], dict[str, str]]  # the signed headers for one try


class WebhookSender:
    """Sends one provider's webhook deliveries with retries and counts them (thread-safe counters)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # counters are read from other threads
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def counts(self) -> dict[str, int]:
        """`tries`, `delivered` (2xx answers), `failed` (other answers and errors), `gave_up`, `lost`."""
        with self._lock:
            counts = dict(self._counts)
        return {key: counts.get(key, 0) for key in ("tries", "delivered", "failed", "gave_up", "lost")}

    def lose(self) -> None:
        """Count a delivery the `webhook_lost` fault dropped."""
        self._count("lost")

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def send(self, url: str, body: bytes, sign: Callable[[], dict[str, str]], behaviour: Behaviour) -> None:
        """Start delivering `body` to `url` (call on the sandbox loop)."""
        self.spawn(self._deliver(_Delivery(url, body, sign), behaviour))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (a delivery or a job's event watcher) on the sandbox loop until done, reset or shutdown."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: _Delivery, behaviour: Behaviour) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT})
        for attempt in range(behaviour.webhook_tries):
            if attempt:
                await asyncio.sleep(behaviour.webhook_backoff_s * 2 ** (attempt - 1))
            self._count("tries")
            headers = {"Content-Type": "application/json", **delivery.sign()}
            try:
                response = await self._client.post(
                    delivery.url, content=delivery.body, headers=headers, timeout=behaviour.webhook_timeout_s
                )
            except httpx.HTTPError:
                self._count("failed")
                continue
            if 200 <= response.status_code < 300:
                self._count("delivered")
                return
            self._count("failed")
        self._count("gave_up")

    def reset(self) -> None:
        """Stop pending deliveries and zero the counters."""
        for task in list(self._tasks):
            task.cancel()
        with self._lock:
            self._counts.clear()

    async def aclose(self) -> None:
        """Stop pending deliveries and close the HTTP client (on the sandbox loop)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
