"""State and HTTP helpers shared by the emulated providers: settings, jobs, counters, the gate every
request passes and fault responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lightning_client.testing._behaviour import (
    COMMON_RULES,
    FLAKY_READS,
    GATEWAY_HTML,
    Behaviour,
    ProviderRules,
    SeededDraws,
)
from lightning_client.testing._jobs import Finisher, Job, JobEngine, Progress, wait_event
from lightning_client.testing._render import ImageSpec, content_type, render
from lightning_client.testing._webhooks import WebhookSender

__all__ = [
    "HANG_LIMIT_S",
    "ErrorResponse",
    "ProviderCore",
    "dumps",
    "gateway_error",
    "hang",
    "json_response",
    "reset_connection",
]

#: A hung response is held at most this long (the client normally gives up first).
HANG_LIMIT_S = 300.0

#: A provider's error response for an HTTP status, in its own format.
ErrorResponse = Callable[[int], Response]


def dumps(body: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(body, separators=(",", ":")).encode()


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = "application/json"
) -> Response:
    """A JSON response, encoded once."""
    return Response(dumps(body), status_code=status, headers=headers, media_type=media_type)


class ProviderCore:
    """One emulated provider: its settings (swapped whole, thread-safe), its jobs and its counters."""

    def __init__(
        self,
        name: str,
        seed: int,
        finish: Finisher,
        progress: Progress | None = None,
        rules: ProviderRules = COMMON_RULES,
    ) -> None:
        self.name = name
        self.rules = rules
        self.behaviour = Behaviour()
        self.draws = SeededDraws(seed)
        self.requests: Counter[str] = Counter()
        self.engine = JobEngine(lambda: self.behaviour.workers, finish, progress)
        self.webhooks = WebhookSender()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing: asyncio.Event | None = None  # set when the sandbox shuts down; releases hung requests
        self._lock = threading.Lock()

    def configure(self, changes: dict[str, Any]) -> None:
        """Validate and apply `changes`; wakes queued jobs when there are more workers."""
        with self._lock:
            self.behaviour = self.behaviour.updated(self.name, self.rules, changes)
        if "workers" in changes and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.engine.pump)

    def reset(self) -> None:
        """Default settings, no jobs, counters at zero (call on the sandbox loop, or before it runs)."""
        with self._lock:
            self.behaviour = Behaviour()
        self.engine.clear()
        self.webhooks.reset()
        with self._lock:
            self.requests.clear()
        # Ids keep counting, so a job or webhook id is never reused within one sandbox; every other draw
        # (seeds, faults, error rate) starts over, so a test sees the same sequence whatever ran before it.
        self.draws.reset(keep=("id", "webhook"))

    def count(self, kind: str) -> None:
        """Record one HTTP request of route kind `kind`."""
        with self._lock:
            self.requests[kind] += 1

    def stats(self) -> dict[str, Any]:
        """Job counters, HTTP requests seen by route kind and webhook delivery counters."""
        with self._lock:
            requests = dict(self.requests)
        return {**self.engine.counts(), "requests": requests, "webhooks": self.webhooks.counts()}

    def injected_5xx(self) -> bool:
        """True when this request should fail with an injected 5xx (`error_rate`)."""
        rate = self.behaviour.error_rate
        return rate > 0 and self.draws.next("error_rate") < rate

    def gate(
        self,
        request: Request,
        kind: str,
        error: ErrorResponse,
        *,
        schemes: Collection[str] = ("bearer",),
        injected: bool = True,
    ) -> Response | None:
        """Count `request` as route kind `kind`, then what refuses it, as `error(status)`: the configured
        `error_status`, an injected 503 (`error_rate`; not with `injected=False`), or a 401 unless its
        Authorization header is one of `schemes` (lowercase) with an accepted token (no `schemes`: no check).
        None lets it through."""
        self.count(kind)
        behaviour = self.behaviour
        if behaviour.error_status is not None:
            return error(behaviour.error_status)
        if injected and self.injected_5xx():
            return error(503)
        if schemes:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() not in schemes or not self.token_ok(token.strip()):
                return error(401)
        return None

    def not_found_handlers(
        self, error: ErrorResponse
    ) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
        """Starlette exception handlers that answer unknown routes and methods as `error(404)`, counted as
        route kind `other`."""

        async def not_found(request: Request, exc: Exception) -> Response:
            self.count("other")
            return error(404)

        return {404: not_found, 405: not_found}

    @staticmethod
    def readable(job: Job | None, error: ErrorResponse) -> Job | Response:
        """`job` for a status read, or what refuses it: `error(404)` when there is no such job, `error(503)`
        for the first `FLAKY_READS` reads of a `flaky_status` job."""
        if job is None:
            return error(404)
        return error(503) if _flaky_status(job) else job

    async def file(
        self, request: Request, error: ErrorResponse, removed: Callable[[Job], bool] | None = None
    ) -> Response:
        """GET /files/{id}/{name}: output file `name` of job `id` (the `truncated_image` fault serves half of
        it); `error(404)` when there is none or `removed(job)`, `error(503)` on the first GET of each file of
        a `flaky_download` job."""
        self.count("file")
        name = request.path_params["name"]
        job = self.engine.get(request.path_params["id"])
        files: dict[str, ImageSpec] = job.meta.get("files", {}) if job is not None else {}
        spec = files.get(name)
        if job is None or spec is None or (removed is not None and removed(job)):
            return error(404)
        if _flaky_download(job, name):
            return error(503)
        data = await asyncio.to_thread(render, spec)
        if job.fault == "truncated_image":
            data = data[: len(data) // 2]
        return Response(data, media_type=content_type(spec.format))

    def token_ok(self, token: str | None) -> bool:
        """Whether `token` is accepted: present and, when `valid_tokens` is set, one of them."""
        if not token:
            return False
        valid = self.behaviour.valid_tokens
        return valid is None or token in valid


def _flaky_status(job: Job) -> bool:
    """True when this status read of a `flaky_status` job must fail (its first `FLAKY_READS` reads)."""
    if job.fault != "flaky_status":
        return False
    reads = int(job.meta.get("status_reads", 0))
    job.meta["status_reads"] = reads + 1
    return reads < FLAKY_READS


def _flaky_download(job: Job, name: str) -> bool:
    """True when this GET of output file `name` of a `flaky_download` job must fail (its first GET)."""
    if job.fault != "flaky_download":
        return False
    seen: set[str] = job.meta.setdefault("downloaded", set())
    if name in seen:
        return False
    seen.add(name)
    return True


def gateway_error() -> Response:
    """A proxy's 502 with an HTML body (the job behind it was created and keeps running)."""
    return Response(GATEWAY_HTML, status_code=502, media_type="text/html")


class _NoResponse(Response):
    """Sends nothing: the connection was already closed."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


async def reset_connection(request: Request) -> Response:
    """Close the client's connection without a response (the job may exist; the client cannot know).

    The transport is the one the server gave the request (put in the scope by the sandbox's dispatcher).
    Where the server does not expose it, the request fails as a 500 instead, which leaves the client just
    as uncertain.
    """
    transport = request.scope.get("lightning.transport")
    if transport is None:
        return Response(b"Internal Server Error", status_code=500, media_type="text/plain")
    transport.abort()
    await asyncio.sleep(0)  # let the server see the connection is gone before the handler returns
    return _NoResponse()


async def hang(request: Request, closing: asyncio.Event | None) -> Response:
    """Never answer: hold the request until the client disconnects, the sandbox shuts down or `HANG_LIMIT_S`
    passes, then drop the connection."""
    stop = closing or asyncio.Event()
    disconnect = asyncio.ensure_future(_until_disconnect(request))
    try:
        waiter = asyncio.ensure_future(wait_event(stop, HANG_LIMIT_S))
        await asyncio.wait({disconnect, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        disconnect.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await disconnect
    return await reset_connection(request)


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
