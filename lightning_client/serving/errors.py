"""The error taxonomy as HTTP: statuses the official OpenAI SDK maps to its matching exceptions.

The body is OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`; `code` is
the taxonomy class name (so `RemoteGenerator` raises the same class again) and `retryable`
says whether the same request may succeed later. `outcome_unknown` says an upstream job may
exist and be billed (a create went unanswered): such a request must not be sent again to this
server, and is never `retryable`; `job_id` names that job when it is known, and `cost` is what
the attempts behind the answer cost (`usd` null: unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from lightning_client.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BudgetExceededError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    RateLimitError,
)
from lightning_client.result import Attempt, Cost

__all__ = ["ApiError", "error_for", "retry_after_header"]

#: Our request field names as the OpenAI Images API calls them.
OPENAI_PARAMS = {"num_images": "n", "width": "size", "height": "size"}


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1), or nothing when unknown."""
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


@dataclass
class ApiError(Exception):
    """An error answer: HTTP status plus the OpenAI error object."""

    status: int
    message: str
    type: str
    code: str
    param: str | None = None
    retryable: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    #: Every attempt behind a routed failure (the ledger's records), for the native API's callers.
    attempts: list[dict[str, Any]] | None = None
    #: An upstream job may exist and be billed; `job_id` names it when known.
    outcome_unknown: bool = False
    job_id: str | None = None
    #: What the attempts behind a provider failure cost (None: no attempt was made).
    cost: Cost | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
            "retryable": self.retryable and not self.outcome_unknown,
            "outcome_unknown": self.outcome_unknown,
        }
        if self.job_id is not None:
            error["job_id"] = self.job_id
        if self.cost is not None:
            error["cost"] = self.cost.model_dump(mode="json")
        if self.attempts is not None:
            error["attempts"] = self.attempts
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _behind(exc: LightningError) -> list[Attempt]:
    """The attempts behind a failure: a router's, else the failing generator's own."""
    if isinstance(exc, AllProvidersFailedError):
        return exc.attempts
    return [exc.attempt] if exc.attempt is not None else []


def _outcome(exc: LightningError) -> dict[str, Any]:
    """`outcome_unknown`, `job_id` and `cost` of the answer for a provider failure."""
    attempts = [a for a in _behind(exc) if a.outcome != "skipped"]
    unknown = [a for a in attempts if a.outcome == "unknown"]
    if not attempts:
        return {"outcome_unknown": exc.outcome_unknown, "job_id": exc.request_id if exc.outcome_unknown else None}
    costs = [a.cost for a in attempts if a.cost.recorded]
    found: dict[str, Any] = {"cost": sum(costs[1:], costs[0])} if costs else {}
    if unknown:
        last = unknown[-1]
        found["outcome_unknown"] = True
        found["job_id"] = last.request_id or (last.remote_ids[-1] if last.remote_ids else None)
    return found


def error_for(exc: LightningError, *, openai_names: bool = False) -> ApiError:
    """The HTTP answer for a taxonomy error.

    400 invalid input (the field in `param`) or content filtered, 402 budget, 429 rate limited
    (with `Retry-After`; also when every provider tried rate-limited us), 504 deadline, 502 every
    other provider failure. A provider's own
    authentication failure is a 502: the caller's key was fine, the server's upstream key was not.
    """
    code = type(exc).__name__
    kwargs: dict[str, Any] = {"message": str(exc), "code": code, "retryable": exc.retryable}
    if isinstance(exc, InvalidRequestError):
        param = exc.field
        if openai_names and param is not None:
            param = OPENAI_PARAMS.get(param, param)
        return ApiError(400, type="invalid_request_error", param=param, **kwargs)
    if isinstance(exc, BudgetExceededError):
        return ApiError(402, type="budget_exceeded", **kwargs)
    kwargs.update(_outcome(exc))
    if isinstance(exc, ContentFilteredError):
        return ApiError(400, type="content_policy_violation", **kwargs)
    if isinstance(exc, RateLimitError):
        return ApiError(429, type="rate_limit_error", headers=retry_after_header(exc.retry_after), **kwargs)
    if isinstance(exc, GenerationTimeoutError):  # also the router's DeadlineExceededError
        if isinstance(exc, AllProvidersFailedError):
            kwargs["attempts"] = [a.model_dump(mode="json") for a in exc.attempts]
        return ApiError(504, type="timeout_error", **kwargs)
    if isinstance(exc, AllProvidersFailedError):
        kwargs["attempts"] = [a.model_dump(mode="json") for a in exc.attempts]
        sent = [a for a in exc.attempts if a.outcome != "skipped"]
        if sent and all(a.error_type == "RateLimitError" for a in sent):  # throttled everywhere: say when to retry
            cause = exc.__cause__
            wait = cause.retry_after if isinstance(cause, LightningError) else None
            kwargs["code"] = "RateLimitError"
            return ApiError(429, type="rate_limit_error", headers=retry_after_header(wait or 1.0), **kwargs)
        return ApiError(502, type="all_providers_failed", **kwargs)
    if isinstance(exc, AuthenticationError):
        return ApiError(502, type="upstream_authentication_error", **kwargs)
    return ApiError(502, type="provider_error", **kwargs)
