"""One HTTP exchange with logging and error mapping, JSON parsing, read retries and small protocol helpers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx

from lightning_client._log import get_logger
from lightning_client.errors import (
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
    RateLimitError,
)
from lightning_client.providers._http.errors import (
    PLAIN,
    REFUSED_STATUSES,
    ErrorHints,
    create_refused,
    error_from_response,
    transport_error,
)

log = get_logger("lightning_client.providers.http")


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (any number of fractional digits, `Z` suffix) or None."""
    if not isinstance(value, str) or not value:
        return None
    try:  # Python 3.11+ reads Replicate's timestamps as they are (a `Z`, up to 9 fractional digits)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
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
    hints: ErrorHints = PLAIN,
) -> httpx.Response:
    """One HTTP exchange with logging and error mapping (`hints`: the provider's); returns only 2xx responses.

    `creates` marks a request that creates a remote job: a failure after sending then
    raises with `outcome_unknown=True` (and the request is never re-sent), except an answer
    refusing the job (429, 503, the provider's refused types), which created nothing.
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
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s -> %d in %.1f ms%s",
            method,
            url,
            response.status_code,
            (time.monotonic() - started) * 1e3,
            f" (id {request_id})" if request_id else "",
        )
    if not response.is_success:
        error = error_from_response(provider, response, request_id=request_id, what=what, hints=hints)
        if creates and not create_refused(response, hints) and answer_may_have_created(response.status_code):
            # A gateway's 502/504 (typical with `Prefer: wait`), a 408 or 499 usually means the job exists.
            error.outcome_unknown = True
            error.message += "; the job may have been created, so it is not re-sent"
        raise error
    return response


def answer_may_have_created(status: int) -> bool:
    """Whether a create answered with `status` may still have created its job (408, 499, 5xx)."""
    return status in (408, 499) or status >= 500


def refused(error: LightningError) -> bool:
    """Whether a create was refused with 429 or 503, which create nothing, so it may be sent again in place."""
    return error.status_code in REFUSED_STATUSES and not error.outcome_unknown and error.retryable is not False


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


T = TypeVar("T")
#: HTTP statuses after which a read (a GET of a status, result or file) is tried again in place.
READ_RETRY_STATUSES = frozenset({408, 425, 429, 502, 503, 504})


def read_retryable(error: LightningError) -> bool:
    """Whether a failed read may succeed when sent again: a transport failure, a throttle, a gateway or
    unavailable answer, or a body that arrived damaged (`retryable` ProviderResponseError without a status).

    A 500 is not retried: on a read of a finished job it is the job's own error and repeats.
    """
    if error.retryable is False:
        return False
    if isinstance(error, (ProviderUnavailableError, RateLimitError)):
        return error.status_code is None or error.status_code in READ_RETRY_STATUSES
    return isinstance(error, ProviderResponseError) and error.status_code in (None, 200, 206)


class ReadRetries:
    """Retries of idempotent reads inside one attempt: exponential backoff with jitter, honouring
    `Retry-After`, never sleeping past the deadline, at most `limit` times per read.

    `remaining()` gives the seconds left before the attempt's deadline (None: no deadline);
    `on_retry()` is called once per retry (the attempt counts them). `retryable(error)` decides
    which failures are tried again (default `read_retryable`); a wait longer than `max_wait_s`
    is not waited out in place.
    """

    def __init__(
        self,
        remaining: Callable[[], float | None],
        on_retry: Callable[[], None],
        *,
        limit: int = 4,
        first_s: float = 0.1,
        cap_s: float = 2.0,
        retryable: Callable[[LightningError], bool] = read_retryable,
        max_wait_s: float = math.inf,
    ) -> None:
        self._remaining = remaining
        self._on_retry = on_retry
        self._retryable = retryable
        self.limit = limit
        self.first_s = first_s
        self.cap_s = cap_s
        self.max_wait_s = max_wait_s

    def delay(self, retry: int, error: LightningError) -> float | None:
        """Seconds before retry number `retry` (0-based) after `error`; None when no retry fits."""
        if retry >= self.limit or not self._retryable(error):
            return None
        delay: float = min(self.cap_s, self.first_s * 2**retry) * random.uniform(0.5, 1.5)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        remaining = self._remaining()
        if delay > self.max_wait_s or (remaining is not None and delay >= remaining):
            return None
        return delay

    async def run(self, read: Callable[[], Awaitable[T]], *, what: str) -> T:
        """`await read()`, retried in place while its failures are retryable and time allows."""
        retry = 0
        while True:
            try:
                return await read()
            except LightningError as exc:
                delay = self.delay(retry, exc)
                if delay is None:
                    raise
                log.debug("%s failed (%s); reading again in %.2f s", what, exc, delay)
            retry += 1
            self._on_retry()
            await asyncio.sleep(delay)
