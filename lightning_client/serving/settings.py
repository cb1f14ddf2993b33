"""`ServerSettings`: what the HTTP layer enforces (auth, queue bounds, retention), nothing about routing."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["API_KEYS_VARIABLE", "ServerSettings", "keys_from_env"]

#: Comma-separated bearer keys the server accepts, read when no `--api-key` is given.
API_KEYS_VARIABLE = "LIGHTNING_CLIENT_API_KEYS"


def keys_from_env() -> list[SecretStr]:
    """The keys in `LIGHTNING_CLIENT_API_KEYS` (comma-separated; blanks dropped)."""
    raw = os.environ.get(API_KEYS_VARIABLE, "")
    return [SecretStr(k.strip()) for k in raw.split(",") if k.strip()]


class ServerSettings(BaseModel):
    """Settings of the HTTP layer.

    Args:
        api_keys: bearer keys accepted on every API route (none: no auth, loopback only by default).
        max_concurrency: requests handed to the generator at once.
        max_queue: requests waiting for a slot beyond those; past it the server answers 429.
        grace_s: on shutdown, how long in-flight requests may finish before they are cancelled.
        file_retention_s: how long images returned as `url` stay downloadable.
        max_files: most images kept for `url` responses (oldest dropped first).
        warmup: load the generator's pipeline at startup; `/readyz` is ready once that is done.
    """

    model_config = ConfigDict(frozen=True)

    api_keys: tuple[SecretStr, ...] = ()
    max_concurrency: int = Field(default=8, ge=1)
    max_queue: int = Field(default=64, ge=0)
    grace_s: float = Field(default=30.0, ge=0.0)
    file_retention_s: float = Field(default=3600.0, gt=0.0)
    max_files: int = Field(default=1000, ge=1)
    warmup: bool = True

    @field_validator("api_keys", mode="before")
    @classmethod
    def _as_secrets(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(v if isinstance(v, SecretStr) else SecretStr(str(v)) for v in value)
        return value
