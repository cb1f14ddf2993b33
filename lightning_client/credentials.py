"""API keys from arguments or the conventional environment variables, kept as SecretStr."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pydantic import SecretStr

from lightning_client._log import register_secret
from lightning_client.errors import ConfigurationError

__all__ = ["clean_secret", "secret_from"]


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
