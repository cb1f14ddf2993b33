"""`ServerSettings`: what the HTTP layer enforces (auth, queue bounds, retention), nothing about routing."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["API_KEYS_VARIABLE", "ServerSection", "ServerSettings", "keys_from_env", "server_section"]

#: Comma-separated bearer keys the server accepts, read when no `--api-key` is given.
API_KEYS_VARIABLE = "LIGHTNING_CLIENT_API_KEYS"


def keys_from_env(variable: str = API_KEYS_VARIABLE) -> list[SecretStr]:
    """The keys in `variable` (default `LIGHTNING_CLIENT_API_KEYS`; comma-separated, blanks dropped)."""
    raw = os.environ.get(variable, "")
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


class ServerSection(BaseModel):
    """The `[server]` table of a configuration file; command-line options win over it.

    `api_keys_env` names the environment variable holding the comma-separated keys (secrets
    are never written in the file).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys_env: str = API_KEYS_VARIABLE
    allow_unauthenticated: bool = False
    max_queue: int = Field(default=64, ge=0)
    max_concurrency: int = Field(default=8, ge=1)
    grace_s: float = Field(default=30.0, ge=0.0)
    file_retention_s: float = Field(default=3600.0, gt=0.0)


def server_section(config: Path | None) -> ServerSection:
    """The `[server]` table of the configuration file `config` (defaults without a file or table).

    Raises `ConfigurationError` (a `ValueError`) naming the key of any problem in the file.
    """
    if config is None:
        return ServerSection()
    from lightning_client.config import read_config

    return read_config(config).section("server", ServerSection)
