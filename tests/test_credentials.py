"""Keys from arguments and environment, and their redaction."""

from __future__ import annotations

import logging

import pytest

from lightning_client.providers.fal import fal_key
from lightning_client.providers.replicate import replicate_token


def test_replicate_token_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    assert replicate_token() is None
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_from_env_123")
    assert replicate_token().get_secret_value() == "r8_from_env_123"  # type: ignore[union-attr]
    assert replicate_token("r8_arg_value").get_secret_value() == "r8_arg_value"  # type: ignore[union-attr]
    assert replicate_token("   ") is None


def test_fal_key_from_key_or_id_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert fal_key() is None
    monkeypatch.setenv("FAL_KEY_ID", "id123")
    assert fal_key() is None
    monkeypatch.setenv("FAL_KEY_SECRET", "secret456789")
    assert fal_key().get_secret_value() == "id123:secret456789"  # type: ignore[union-attr]
    monkeypatch.setenv("FAL_KEY", "whole-key-value")
    assert fal_key().get_secret_value() == "whole-key-value"  # type: ignore[union-attr]


def test_secrets_never_show_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = replicate_token("r8_supersecret_token_value")
    assert token is not None
    assert "supersecret" not in repr(token) and "supersecret" not in str(token)
    import lightning_client  # noqa: F401 - installs the package logger's filter

    logger = logging.getLogger("lightning_client")
    with caplog.at_level(logging.DEBUG, logger="lightning_client"):
        logger.debug("header Authorization: Bearer %s", "r8_supersecret_token_value")
    assert "supersecret" not in caplog.text
    assert "**********" in caplog.text


def test_a_secret_inside_a_longer_one_does_not_break_its_mask() -> None:
    from lightning_client._log import mask_secrets, register_secret

    register_secret("inner-secret-7")
    register_secret("r8_outer_inner-secret-7_tail")
    assert mask_secrets("token r8_outer_inner-secret-7_tail rejected") == "token ********** rejected"
    assert mask_secrets("just inner-secret-7") == "just **********"
