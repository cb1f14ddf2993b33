"""The package's loggers, and the secrets their filter masks wherever they appear."""

from __future__ import annotations

import logging

__all__ = ["SecretFilter", "get_logger", "mask_secrets", "register_secret"]

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so the package logger's filter masks it wherever it appears."""
    if len(value) >= 6:
        _secrets.add(value)


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
