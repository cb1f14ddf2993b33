"""The error taxonomy."""

from __future__ import annotations

import pytest

import lightning_client as lc

ALL = [
    lc.InvalidRequestError,
    lc.AuthenticationError,
    lc.RateLimitError,
    lc.ProviderUnavailableError,
    lc.GenerationTimeoutError,
    lc.ContentFilteredError,
    lc.ProviderResponseError,
    lc.BudgetExceededError,
]


@pytest.mark.parametrize("cls", ALL)
def test_every_class_is_a_lightning_error_with_its_fields(cls: type[lc.LightningError]) -> None:
    err = cls("boom", provider="fal", status_code=503, request_id="abc", retry_after=2.0)
    assert isinstance(err, lc.LightningError)
    assert (err.provider, err.status_code, err.request_id, err.retry_after) == ("fal", 503, "abc", 2.0)
    assert str(err) == "boom (provider=fal, status=503, request_id=abc)"
    assert err.to_dict()["type"] == cls.__name__
    assert err.attempt is None


def test_default_retryability_follows_the_class() -> None:
    retryable = {c for c in ALL if c("x").retryable}
    assert retryable == {lc.RateLimitError, lc.ProviderUnavailableError, lc.GenerationTimeoutError}
    assert lc.ProviderResponseError("x", retryable=True).retryable is True


def test_invalid_request_is_a_value_error_with_a_field() -> None:
    err = lc.InvalidRequestError("bad", field="steps")
    assert isinstance(err, ValueError)
    assert err.field == "steps"


def test_all_providers_failed_lists_each_attempt() -> None:
    attempts = [
        lc.Attempt(provider="replicate", outcome="failed", error_type="ProviderUnavailableError", error_message="503"),
        lc.Attempt(provider="fal", outcome="failed", error_type="RateLimitError", error_message="429"),
    ]
    err = lc.AllProvidersFailedError("all failed", attempts=attempts)
    assert len(err.attempts) == 2
    assert err.errors == ["replicate: ProviderUnavailableError: 503", "fal: RateLimitError: 429"]
