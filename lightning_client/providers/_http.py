"""HTTP plumbing shared by the hosted backends: clients, auth, error mapping, polling, cancellation."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import itertools
import json
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import certifi
import httpx
from pydantic import SecretStr

from lightning_client import __version__
from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._sync import PerLoop
from lightning_client.credentials import get_logger, mask_secrets
from lightning_client.errors import (
    AuthenticationError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
    RateLimitError,
)
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.images import DecodedImage, download_image
from lightning_client.pricing import DEFAULT_PRICES, PriceTable

__all__ = [
    "HttpClients",
    "HttpGenerator",
    "PollDelays",
    "detach",
    "error_from_response",
    "expired",
    "make_timeout",
    "parse_json",
    "parse_retry_after",
    "parse_timestamp",
    "retrieve_errors",
    "salvage_id",
    "send",
    "shielded",
    "transport_error",
]

T = TypeVar("T")

log = get_logger("lightning_client.providers.http")

USER_AGENT = f"lightning-client/{__version__}"
#: Longest error detail quoted in an exception message.
_DETAIL_CHARS = 300
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
#: fal error types that mean "the job or prompt was blocked by a safety filter".
_FILTERED_TYPES = frozenset({"content_policy_violation", "nsfw_content_detected"})
#: fal error types that mean "a deadline passed".
_TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout"})
#: httpx errors raised before any byte of the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_background: set[asyncio.Task[Any]] = set()
#: The subset of `_background` that is cancelling remote jobs right now (bounded work).
_cleanups: set[asyncio.Task[Any]] = set()


def make_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """An explicit httpx timeout: `timeout` seconds for reads, at most 10 s to connect."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(10.0, timeout), pool=min(10.0, timeout))


class _ClientShards:
    """Several `httpx.AsyncClient`s used in turn, for one event loop.

    httpcore's pool rescans every connection and queued request on each request event, so
    one pool's CPU cost per request grows with the requests in flight; pools of at most
    `SHARD_CONNECTIONS` connections keep it flat (measured in benchmarks/concurrency.py).
    """

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turn = itertools.cycle(clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))


#: The most connections one httpx client (one pool) is given.
SHARD_CONNECTIONS = 16


def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context: certifi's roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (as httpx does)."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    return _tls_context_for(cafile, None if cafile else os.environ.get("SSL_CERT_DIR") or None)


@functools.cache
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One context per CA setting, shared by every client: loading a CA bundle costs ~30 ms each time."""
    if cafile is None and capath is None:
        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


class HttpClients:
    """The HTTP clients of one generator, per event loop (pooled connections, explicit limits)."""

    def __init__(self, *, timeout: httpx.Timeout, max_connections: int) -> None:
        self.timeout = timeout
        shards = math.ceil(max_connections / SHARD_CONNECTIONS)
        per_shard = math.ceil(max_connections / shards)
        self._limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = shards
        self._clients: PerLoop[_ClientShards] = PerLoop(self._new)

    def _new(self) -> _ClientShards:
        return _ClientShards(
            [
                httpx.AsyncClient(
                    timeout=self.timeout,
                    limits=self._limits,
                    headers={"User-Agent": USER_AGENT},
                    follow_redirects=False,
                    verify=_tls_context(),
                )
                for _ in range(self._shards)
            ]
        )

    def get(self) -> httpx.AsyncClient:
        """A client for the running loop (several are used in turn when the pool is large)."""
        return self._clients.get().next()

    async def aclose(self, drain_s: float = 5.0) -> None:
        """Close the running loop's clients, after giving remote cancels in progress up to `drain_s` to finish.

        Creates still waiting for an answer are not waited for: closing the client aborts them.
        """
        loop = asyncio.get_running_loop()
        pending = [t for t in _cleanups if t.get_loop() is loop and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=drain_s)
        shards = self._clients.pop_current()
        if shards is not None:
            await shards.aclose()

    def close_all(self) -> None:
        """Close every client from synchronous code (each on its own loop when that loop still runs)."""
        for loop, shards in self._clients.pop_all():
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                task = loop.create_task(shards.aclose())
                _background.add(task)
                task.add_done_callback(_background.discard)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(shards.aclose(), loop)
                try:
                    future.result(timeout=5)
                except Exception:
                    log.debug("closing an HTTP client timed out or failed", exc_info=True)


def auth_header(scheme: str, secret: SecretStr) -> dict[str, str]:
    """The Authorization header; built per call so the raw secret is never stored."""
    return {"Authorization": f"{scheme} {secret.get_secret_value()}"}


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (any number of fractional digits, `Z` suffix) or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("z", "Z")
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    match = re.match(r"^(.*?\.\d{1,6})\d*(.*)$", text)  # fromisoformat takes at most 6 fractional digits
    if match:
        text = match.group(1) + match.group(2)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_retry_after(response: httpx.Response, detail: str = "") -> float | None:
    """Seconds to wait from `Retry-After`, else the larger of `ratelimit-reset` and a "resets in ~30s" text."""
    value = response.headers.get("retry-after", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    hints: list[float] = []
    reset = response.headers.get("ratelimit-reset", "").strip()
    if reset:
        try:
            hints.append(max(0.0, float(reset)))
        except ValueError:
            pass
    match = _RESETS_IN.search(detail)
    if match:
        hints.append(float(match.group(1)))
    return max(hints) if hints else None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _detail(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI-style validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', item.get('type', ''))}" if loc else str(item.get("msg")))
                else:
                    parts.append(str(item))
            text = "; ".join(parts)
        elif detail is not None:
            text = str(detail)
        else:
            text = str(body.get("title") or body.get("error") or body.get("message") or "")
    else:
        text = response.text
    text = mask_secrets(" ".join(text.split()))  # a provider may quote our credentials back
    return text[:_DETAIL_CHARS] + ("..." if len(text) > _DETAIL_CHARS else "")


def _error_types(body: Any, response: httpx.Response) -> set[str]:
    types = {response.headers.get("x-fal-error-type", "")}
    if isinstance(body, dict):
        types.add(str(body.get("error_type") or ""))
        detail = body.get("detail")
        if isinstance(detail, list):
            types.update(str(item.get("type", "")) for item in detail if isinstance(item, dict))
    types.discard("")
    return types


def _invalid_field(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    fields = body.get("invalid_fields")
    if isinstance(fields, list) and fields and isinstance(fields[0], dict):
        return str(fields[0].get("field", "")).removeprefix("input.") or None
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(p) for p in detail[0].get("loc", ()) if p != "body"]
        return loc[-1] if loc else None
    return None


def error_from_response(
    provider: str, response: httpx.Response, *, request_id: str | None = None, what: str = "request"
) -> LightningError:
    """Map an unsuccessful HTTP response to the error taxonomy.

    401/402/403 -> AuthenticationError; 429 -> RateLimitError; 400/422 -> InvalidRequestError
    (content-policy types -> ContentFilteredError); 504 deadline types -> GenerationTimeoutError;
    408/409/499/5xx -> ProviderUnavailableError; anything else -> ProviderResponseError.
    fal's `X-Fal-Retryable` header, when present, decides `retryable`.
    """
    status = response.status_code
    body = _body(response)
    detail = _detail(body, response)
    types = _error_types(body, response)
    message = f"{what} failed with HTTP {status}" + (f": {detail}" if detail else "")
    fields: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "request_id": request_id,
        "retry_after": parse_retry_after(response, detail),
    }
    error: LightningError
    if types & _FILTERED_TYPES:
        error = ContentFilteredError(message, **fields)
    elif status in (401, 402, 403):
        error = AuthenticationError(message, **fields)
    elif status == 429:
        error = RateLimitError(message, **fields)
    elif status == 504 and (types & _TIMEOUT_TYPES or response.headers.get("x-fal-request-timeout-type")):
        error = GenerationTimeoutError(message, **fields)
    elif status in (408, 409, 499) or status >= 500:
        error = ProviderUnavailableError(message, **fields)
    elif status in (400, 422):
        error = InvalidRequestError(message, field=_invalid_field(body), **fields)
    else:
        error = ProviderResponseError(message, **fields)
    flag = (response.headers.get("x-fal-retryable") or response.headers.get("x-fal-needs-retry") or "").lower()
    if flag in ("true", "1", "yes", "false", "0", "no"):
        error.retryable = flag in ("true", "1", "yes")
    return error


def transport_error(
    provider: str, exc: httpx.HTTPError, *, what: str, request_id: str | None = None, creates: bool = False
) -> LightningError:
    """Map an httpx transport failure; for a create that may have reached the server, flag `outcome_unknown`."""
    unknown = creates and not isinstance(exc, _NOT_SENT)
    message = f"{what} failed: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    if unknown:
        message += "; the job may have been created, so it is not re-sent"
    return ProviderUnavailableError(message, provider=provider, request_id=request_id, outcome_unknown=unknown)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    what: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    timeout: httpx.Timeout | None = None,
    request_id: str | None = None,
    creates: bool = False,
) -> httpx.Response:
    """One HTTP exchange with logging and error mapping; returns only 2xx responses.

    `creates` marks a request that creates a remote job: a failure after sending then
    raises with `outcome_unknown=True` (and the request is never re-sent).
    """
    started = time.monotonic()
    try:
        response = await client.request(
            method,
            url,
            headers=headers,
            json=json_body,
            timeout=client.timeout if timeout is None else timeout,
        )
    except httpx.HTTPError as exc:
        log.debug("%s %s failed after %.1f ms: %s", method, url, (time.monotonic() - started) * 1e3, type(exc).__name__)
        raise transport_error(provider, exc, what=what, request_id=request_id, creates=creates) from None
    log.debug(
        "%s %s -> %d in %.1f ms%s",
        method,
        url,
        response.status_code,
        (time.monotonic() - started) * 1e3,
        f" (id {request_id})" if request_id else "",
    )
    if not response.is_success:
        raise error_from_response(provider, response, request_id=request_id, what=what)
    return response


def parse_json(
    response: httpx.Response,
    *,
    provider: str,
    what: str,
    request_id: str | None = None,
    outcome_unknown: bool = False,
) -> dict[str, Any]:
    """The response's JSON object, or a retryable `ProviderResponseError` naming what was wrong."""
    try:
        body = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"is not valid JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else exc})"
    else:
        if isinstance(body, dict):
            return body
        problem = f"is a JSON {type(body).__name__}, not an object"
    raise ProviderResponseError(
        f"{what} response (HTTP {response.status_code}) {problem}",
        provider=provider,
        status_code=response.status_code,
        request_id=request_id,
        retryable=True,
        outcome_unknown=outcome_unknown,
    )


def salvage_id(content: bytes, key: str) -> str | None:
    """The string value of `key` from a truncated or malformed JSON body, when it is still readable.

    A create whose answer is cut off has still created the job; recovering its id lets us cancel it.
    """
    match = re.search(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"', content[:4096])
    return match.group(1).decode() if match else None


def expired(remaining: float | None) -> bool:
    """Whether a deadline with `remaining` seconds left (None: no deadline) has passed."""
    return remaining is not None and remaining <= 0


class PollDelays:
    """Adaptive polling: fast at first, growing geometrically to a cap, never past the deadline."""

    def __init__(self, first: float = 0.05, cap: float = 1.0, factor: float = 1.5) -> None:
        self._next = first
        self._cap = cap
        self._factor = factor

    def next(self, remaining: float | None = None) -> float:
        """The next sleep in seconds (clipped to `remaining`, the seconds left before the deadline)."""
        delay = self._next
        self._next = min(self._cap, self._next * self._factor)
        return delay if remaining is None else max(0.0, min(delay, remaining))


async def _bounded(coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T | None:
    try:
        async with async_timeout(timeout):
            return await coro
    except TIMEOUT_ERRORS:
        log.warning("%s did not finish within %.1f s", what, timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup must never replace the original error
        log.warning("%s failed: %s", what, exc)
    return None


def _keep(task: asyncio.Task[Any]) -> None:
    _background.add(task)
    task.add_done_callback(_background.discard)


async def shielded(coro: Coroutine[Any, Any, T], *, timeout: float, what: str) -> T | None:
    """Run `coro` to the end even if the caller is being cancelled; best effort, bounded by `timeout`.

    Used to cancel abandoned remote jobs: failures are logged and give None. If the
    caller is cancelled again while waiting, the work is still finished before the
    cancellation propagates.
    """
    task = asyncio.ensure_future(_bounded(coro, timeout, what))
    _keep(task)
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Cancelled again (say, the deadline passed during the cleanup): finish the bounded work, then go.
        await asyncio.wait({task})
        raise


def retrieve_errors(future: asyncio.Future[Any]) -> None:
    """Mark `future`'s error as seen even if nobody awaits it (an abandoned create's answer)."""
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())


def detach(coro: Coroutine[Any, Any, Any], *, timeout: float, what: str) -> None:
    """Run `coro` in the background, bounded by `timeout`; failures are logged."""
    _keep(asyncio.ensure_future(_bounded(coro, timeout, what)))


class HttpGenerator(BaseGenerator):
    """The shared part of the hosted backends: HTTP clients, polling and cancel settings, capabilities.

    Subclasses set `_capabilities` (and `_log`, their provider's logger) and keep the provider's
    protocol: request mapping, job lifecycle, response parsing.
    """

    _capabilities: Capabilities
    _log = log

    def __init__(
        self,
        *,
        model: str,
        name: str | None = None,
        prices: PriceTable | None,
        timeout: float | httpx.Timeout,
        max_connections: int,
        poll_initial_s: float,
        poll_max_s: float,
        cancel_timeout_s: float,
    ) -> None:
        self.name = self._check_name(name)
        self.model = model
        self.prices = prices or DEFAULT_PRICES
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.cancel_timeout_s = cancel_timeout_s
        self._http = HttpClients(timeout=make_timeout(timeout), max_connections=max_connections)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def _close(self) -> None:
        await self._http.aclose()

    def _close_all(self) -> None:
        self._http.close_all()

    def _read_timeout(self, read: float) -> httpx.Timeout:
        """The clients' timeout with another read timeout."""
        base = self._http.timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def _post_create(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str],
        json_body: Any,
        timeout: httpx.Timeout | None = None,
    ) -> asyncio.Future[httpx.Response]:
        """Start the POST that creates a remote job, as a future that may be left running.

        Await it through `asyncio.shield`: when the attempt is abandoned, its answer still names the job to cancel.
        """
        post = asyncio.ensure_future(
            send(
                client,
                "POST",
                url,
                provider=self.name,
                what=what,
                headers=headers,
                json_body=json_body,
                timeout=timeout,
                creates=True,
            )
        )
        retrieve_errors(post)
        return post

    async def _created(
        self,
        ctx: AttemptContext,
        response: httpx.Response,
        *,
        what: str,
        id_key: str,
        noun: str,
        abandon: Callable[[str], Coroutine[Any, Any, None]],
    ) -> dict[str, Any]:
        """The JSON body of a create's answer, which holds the new job's id under `id_key`.

        When the body is unreadable but the id can still be read from it, the job is cancelled
        (`abandon(id)`) rather than left running unseen, and the error says so.
        """
        try:
            body = parse_json(response, provider=self.name, what=what, outcome_unknown=True)
        except ProviderResponseError as exc:
            job_id = salvage_id(response.content, id_key)
            if job_id is None:
                raise
            ctx.job_started(job_id)
            await abandon(job_id)
            raise ProviderResponseError(
                f"{exc.message}; {noun} {job_id} was identified in the partial body and cancelled",
                provider=self.name,
                status_code=response.status_code,
                request_id=job_id,
                retryable=True,
            ) from None
        job_id = body.get(id_key)
        if not isinstance(job_id, str) or not job_id:
            raise ProviderResponseError(
                f"{what} response has no {id_key}",
                provider=self.name,
                status_code=response.status_code,
                retryable=True,
                outcome_unknown=True,
            )
        return body

    def _cancel_when_answered(
        self,
        post: asyncio.Future[httpx.Response],
        id_key: str,
        cancel: Callable[[str], Coroutine[Any, Any, Any]],
        *,
        warning: str,
        what: str,
        known: Collection[str] = (),
        wait_s: float = 0.0,
    ) -> None:
        """The attempt was abandoned with a create in flight: once it answers, cancel the job it made.

        `known` holds ids already dealt with; `wait_s` is how long the server may hold the answer back.
        """

        async def reap() -> None:
            try:
                response = await post
            except LightningError:
                return
            job_id = salvage_id(response.content, id_key)
            if job_id is not None and job_id not in known:
                self._log.warning(warning, job_id)
                await cancel(job_id)

        read = self._http.timeout.read or 30.0
        detach(reap(), timeout=wait_s + read + self.cancel_timeout_s, what=what)

    async def _download_output(
        self, client: httpx.AsyncClient, url: str, job_id: str, *, headers: dict[str, str] | None = None
    ) -> tuple[DecodedImage, float]:
        """One output file of a finished job, and the seconds it took; failures are retryable."""
        try:
            return await download_image(client, url, provider=self.name, headers=headers)
        except LightningError as exc:
            exc.request_id = job_id
            exc.retryable = True  # the job succeeded; a new one will most likely deliver intact files
            raise
