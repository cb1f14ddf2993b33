"""The error taxonomy: every failure the SDK raises is one of these classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_client.result import Attempt

__all__ = [
    "AllProvidersFailedError",
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigurationError",
    "ContentFilteredError",
    "GenerationTimeoutError",
    "InvalidRequestError",
    "LightningError",
    "ProviderResponseError",
    "ProviderUnavailableError",
    "RateLimitError",
    "UnknownProviderError",
]


class LightningError(Exception):
    """Base class of every error raised by lightning_client.

    Attributes:
        provider: generator name ("replicate", "fal", "local", "router") or None.
        status_code: HTTP status of the failing response, when there was one.
        request_id: the remote job id, when one was created.
        retryable: whether the same request may succeed if tried again.
        retry_after: seconds the provider asked us to wait, when it said so.
        attempt: the ledger record of the failed attempt, filled in by generators.
        outcome_unknown: a create was sent but its outcome is unknown (timeout or reset
            after sending); the job may exist and cost money, so a router should fail
            over to another provider instead of re-sending to this one.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.attempt: Attempt | None = None

    def __str__(self) -> str:
        details = [
            f"{key}={value}"
            for key, value in (
                ("provider", self.provider),
                ("status", self.status_code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, provider={self.provider!r}, status_code={self.status_code!r}, request_id={self.request_id!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, as stored in the ledger."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "provider": self.provider,
            "status_code": self.status_code,
            "request_id": self.request_id,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "outcome_unknown": self.outcome_unknown,
        }


class InvalidRequestError(LightningError, ValueError):
    """The request cannot be served as given; sending it again will not help.

    `field` names the offending field when the problem is one field's value.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field


class ConfigurationError(LightningError, ValueError):
    """A generator, router or configuration file was set up wrongly (nothing was sent).

    `path` names the offending argument, environment variable or configuration key
    (e.g. `generators[1].base_url`).
    """

    def __init__(self, message: str, *, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.path = path


class UnknownProviderError(ConfigurationError):
    """No provider is registered under the given kind; the message lists every valid one."""


class AuthenticationError(LightningError):
    """The provider rejected the credentials (401/403) or billing (402)."""


class RateLimitError(LightningError):
    """The provider throttled us (429); `retry_after` says for how long when known."""

    default_retryable = True


class ProviderUnavailableError(LightningError):
    """The provider could not be reached or answered with a server error."""

    default_retryable = True


class GenerationTimeoutError(LightningError):
    """The request's deadline passed; any remote job was cancelled."""

    default_retryable = True


class ContentFilteredError(LightningError):
    """The provider's safety checker blocked the output or the prompt."""


class ProviderResponseError(LightningError):
    """The provider answered with something we cannot use (bad JSON, bad image, failed job)."""


class BudgetExceededError(LightningError):
    """The expected cost of the request exceeds what is left of the budget."""


class AllProvidersFailedError(LightningError):
    """Every eligible provider failed; `attempts` holds each try with its error."""

    def __init__(self, message: str, *, attempts: Sequence[Attempt], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.attempts = list(attempts)

    @property
    def errors(self) -> list[str]:
        """One line per failed attempt: provider, error class and message."""
        return [f"{a.provider}: {a.error_type}: {a.error_message}" for a in self.attempts if a.error_type]
