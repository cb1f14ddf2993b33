"""API keys from arguments or the conventional environment variables, kept as SecretStr."""

from __future__ import annotations

import logging
import os

from pydantic import SecretStr

__all__ = ["SecretFilter", "fal_key", "get_logger", "mask_secrets", "register_secret", "replicate_token"]

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so the package logger's filter masks it wherever it appears."""
    if len(value) >= 6:
        _secrets.add(value)


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not raw.strip():
        return None
    register_secret(raw)
    return SecretStr(raw)


def replicate_token(value: str | SecretStr | None = None) -> SecretStr | None:
    """The Replicate token: the argument, else REPLICATE_API_TOKEN."""
    return _secret(value if value is not None else os.environ.get("REPLICATE_API_TOKEN"))


def fal_key(value: str | SecretStr | None = None) -> SecretStr | None:
    """The fal key: the argument, else FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET."""
    if value is not None:
        return _secret(value)
    if os.environ.get("FAL_KEY"):
        return _secret(os.environ["FAL_KEY"])
    key_id, key_secret = os.environ.get("FAL_KEY_ID"), os.environ.get("FAL_KEY_SECRET")
    if key_id and key_secret:
        register_secret(key_secret)
        return _secret(f"{key_id}:{key_secret}")
    return None


def mask_secrets(text: str) -> str:
    """`text` with every registered secret replaced by asterisks."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "**********")
    return text


class SecretFilter(logging.Filter):
    """Masks registered secrets in log records of the `lightning_client` logger tree."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def get_logger(name: str) -> logging.Logger:
    """A logger with the secret-masking filter (logger filters are not inherited by children)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, SecretFilter) for f in logger.filters):
        logger.addFilter(SecretFilter())
    return logger
