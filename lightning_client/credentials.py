"""API keys from arguments or the conventional environment variables, kept as SecretStr."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pydantic import SecretStr

from lightning_client.errors import ConfigurationError

__all__ = [
    "SecretFilter",
    "clean_secret",
    "fal_key",
    "get_logger",
    "mask_secrets",
    "register_secret",
    "replicate_token",
    "secret_from",
]

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so the package logger's filter masks it wherever it appears."""
    if len(value) >= 6:
        _secrets.add(value)


def clean_secret(value: str | SecretStr | None, *, source: str, provider: str | None = None) -> SecretStr | None:
    """`value` without surrounding whitespace, or None when empty.

    A value with whitespace or control characters inside cannot be sent in a header: it
    raises `ConfigurationError` naming `source` (the argument or variable), never the value.
    """
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str):
        raise ConfigurationError(f"{source} must be a string, not {type(raw).__name__}", path=source, provider=provider)
    text = raw.strip()
    if not text:
        return None
    register_secret(text)
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in text):
        raise ConfigurationError(
            f"{source} is not a valid key: it contains whitespace, control or non-ASCII characters "
            "(the value is not shown)",
            path=source,
            provider=provider,
        )
    return SecretStr(text)


def secret_from(
    value: str | SecretStr | None, *, argument: str, env: Sequence[str] = (), provider: str | None = None
) -> SecretStr | None:
    """A credential: the argument `value`, else the first non-empty variable of `env`; cleaned by `clean_secret`."""
    if value is not None:
        return clean_secret(value, source=argument, provider=provider)
    for variable in env:
        found = os.environ.get(variable)
        if found and found.strip():
            return clean_secret(found, source=f"environment variable {variable}", provider=provider)
    return None


def replicate_token(value: str | SecretStr | None = None) -> SecretStr | None:
    """The Replicate token: the argument, else REPLICATE_API_TOKEN (kept for compatibility)."""
    from lightning_client.providers.replicate import ReplicateGenerator

    return ReplicateGenerator._credential(value)


def fal_key(value: str | SecretStr | None = None) -> SecretStr | None:
    """The fal key: the argument, else FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (kept for compatibility)."""
    from lightning_client.providers.fal import FalGenerator

    return FalGenerator._credential(value)


def mask_secrets(text: str) -> str:
    """`text` with every registered secret replaced by asterisks."""
    # Longest first: a short secret inside a longer one must not break the longer one's mask.
    for secret in sorted(_secrets, key=len, reverse=True):
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
