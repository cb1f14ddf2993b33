"""Mapping HTTP answers and transport failures onto the error taxonomy."""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from lightning_client._log import mask_secrets
from lightning_client.errors import (
    AuthenticationError,
    BudgetExceededError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
    RateLimitError,
)

#: Longest error detail quoted in an exception message.
_DETAIL_CHARS = 300
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
#: httpx errors raised before any byte of the request can have reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class ErrorHints:
    """What a provider's error answers say beyond the status code; a provider module declares its own.

    Error types are read from `type_headers` and from the body (`error_type`, FastAPI-style
    `detail[].type`); `retryable_headers` carry a true/false flag that decides `retryable`.
    """

    type_headers: tuple[str, ...] = ()
    #: Error types meaning "the job or prompt was blocked by a safety filter".
    filtered_types: frozenset[str] = frozenset()
    #: Error types, or headers present on a 504, meaning "a deadline passed".
    timeout_types: frozenset[str] = frozenset()
    timeout_headers: tuple[str, ...] = ()
    retryable_headers: tuple[str, ...] = ()
    #: Error types meaning "the job was not taken" (a create so answered created nothing).
    refused_types: frozenset[str] = frozenset()


#: The hints of a provider that says nothing beyond the status code and body.
PLAIN = ErrorHints()

#: Error codes an answer names, and the class of the taxonomy raised for each: the taxonomy's class names
#: (what `lightning-client serve` sends as `error.code`) and the upper-case codes of error frames
#: (a realtime socket's).
ERROR_CODES: dict[str, type[LightningError]] = {
    "InvalidRequestError": InvalidRequestError,
    "AuthenticationError": AuthenticationError,
    "RateLimitError": RateLimitError,
    "ProviderUnavailableError": ProviderUnavailableError,
    "GenerationTimeoutError": GenerationTimeoutError,
    "DeadlineExceededError": GenerationTimeoutError,
    "ContentFilteredError": ContentFilteredError,
    "ProviderResponseError": ProviderResponseError,
    "BudgetExceededError": BudgetExceededError,
    # every provider behind the server failed: to its client, the server is unavailable
    "AllProvidersFailedError": ProviderUnavailableError,
    # error frames
    "TIMEOUT": GenerationTimeoutError,
    "UNAUTHORIZED": AuthenticationError,
    "FORBIDDEN": AuthenticationError,
    "RATE_LIMITED": RateLimitError,
    "TOO_MANY_REQUESTS": RateLimitError,
    "BAD_REQUEST": InvalidRequestError,
    "VALIDATION_ERROR": InvalidRequestError,
    "CONTENT_POLICY_VIOLATION": ContentFilteredError,
    "INTERNAL_ERROR": ProviderUnavailableError,
    "CONNECTION_CLOSED": ProviderUnavailableError,
}


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


def _error_types(body: Any, response: httpx.Response, hints: ErrorHints) -> set[str]:
    types = {response.headers.get(name, "") for name in hints.type_headers}
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
    provider: str,
    response: httpx.Response,
    *,
    request_id: str | None = None,
    what: str = "request",
    hints: ErrorHints = PLAIN,
) -> LightningError:
    """Map an unsuccessful HTTP response to the error taxonomy.

    401/402/403 -> AuthenticationError; 429 -> RateLimitError; 400/422 -> InvalidRequestError
    (content-policy types -> ContentFilteredError); 504 deadline types -> GenerationTimeoutError;
    408/409/499/5xx -> ProviderUnavailableError; anything else -> ProviderResponseError.
    A retryable flag among the provider's `hints`, when present, decides `retryable`.
    """
    status = response.status_code
    body = _body(response)
    detail = _detail(body, response)
    types = _error_types(body, response, hints)
    message = f"{what} failed with HTTP {status}" + (f": {detail}" if detail else "")
    fields: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "request_id": request_id,
        "retry_after": parse_retry_after(response, detail),
    }
    error: LightningError
    if types & hints.filtered_types:
        error = ContentFilteredError(message, **fields)
    elif status in (401, 402, 403):
        error = AuthenticationError(message, **fields)
    elif status == 429:
        error = RateLimitError(message, **fields)
    elif status == 504 and (types & hints.timeout_types or any(h in response.headers for h in hints.timeout_headers)):
        error = GenerationTimeoutError(message, **fields)
    elif status in (408, 409, 499) or status >= 500:
        error = ProviderUnavailableError(message, **fields)
    elif status in (400, 422):
        error = InvalidRequestError(message, field=_invalid_field(body), **fields)
    else:
        error = ProviderResponseError(message, **fields)
    for header in hints.retryable_headers:
        flag = response.headers.get(header, "").lower()
        if flag in ("true", "1", "yes", "false", "0", "no"):
            error.retryable = flag in ("true", "1", "yes")
            break
    return error


#: Statuses that answer a create without creating anything: throttled (429) or not taken (503).
REFUSED_STATUSES = frozenset({429, 503})


def create_refused(response: httpx.Response, hints: ErrorHints = PLAIN) -> bool:
    """Whether a create's unsuccessful answer says the provider did not take the job (nothing was created)."""
    if response.status_code in REFUSED_STATUSES:
        return True
    return bool(hints.refused_types) and bool(_error_types(_body(response), response, hints) & hints.refused_types)


def transport_error(
    provider: str, exc: httpx.HTTPError, *, what: str, request_id: str | None = None, creates: bool = False
) -> LightningError:
    """Map an httpx transport failure; for a create that may have reached the server, flag `outcome_unknown`."""
    unknown = creates and not isinstance(exc, _NOT_SENT)
    message = f"{what} failed: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    if unknown:
        message += "; the job may have been created, so it is not re-sent"
    return ProviderUnavailableError(message, provider=provider, request_id=request_id, outcome_unknown=unknown)
