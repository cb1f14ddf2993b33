"""`ServerSettings`: what the HTTP layer enforces (auth, queue bounds, retention), nothing about routing."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from lightning_client.images import is_loopback_host

__all__ = [
    "API_KEYS_VARIABLE",
    "MAX_BODY_BYTES",
    "MAX_FILE_BYTES",
    "ServerSection",
    "ServerSettings",
    "keys_from_env",
    "refuse_keyless_exposure",
    "server_section",
]

#: Comma-separated bearer keys the server accepts, read when no `--api-key` is given.
API_KEYS_VARIABLE = "LIGHTNING_CLIENT_API_KEYS"
#: Default largest request body, in bytes (1 MiB): a request is a prompt and a few numbers.
MAX_BODY_BYTES = 1 << 20
#: Default bound on the bytes of images kept for `url` answers (256 MiB).
MAX_FILE_BYTES = 256 << 20


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
        max_file_bytes: most bytes of images kept for `url` responses (oldest dropped first).
        warmup: load the generator's pipeline at startup; `/readyz` is ready once that is done.
        allow_unauthenticated: without keys, answer connections beyond loopback too.
        public_url: the server's base URL as clients reach it (e.g. behind a proxy); `url` image
            links start with it. None: the address the connection arrived at.
        allowed_hosts: more `Host` names a server without keys answers to (besides loopback names,
            its own address and `public_url`'s host); `"*"` turns the check off.
        allowed_origins: web origins (`https://app.example`) whose pages may open the realtime
            socket, besides the server's own origin.
        max_body_bytes: largest request body; a larger one is refused with 413 before it is read.
        allowed_provider_options: `provider.key` names (e.g. `fal.expand_prompt`) an HTTP caller may
            set in `provider_options`; none by default.
        docs: serve the browsable API docs at `/docs` (their page loads scripts from a CDN).
    """

    model_config = ConfigDict(frozen=True)

    api_keys: tuple[SecretStr, ...] = ()
    max_concurrency: int = Field(default=8, ge=1)
    max_queue: int = Field(default=64, ge=0)
    grace_s: float = Field(default=30.0, ge=0.0)
    file_retention_s: float = Field(default=3600.0, gt=0.0)
    max_files: int = Field(default=1000, ge=1)
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, ge=1)
    warmup: bool = True
    allow_unauthenticated: bool = False
    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1)
    allowed_provider_options: tuple[str, ...] = ()
    docs: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _as_secrets(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(v if isinstance(v, SecretStr) else SecretStr(str(v)) for v in value)
        return value

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
            raise ValueError(
                f"public_url={value!r} is invalid; allowed: an http(s) base URL, e.g. https://images.example"
            )
        return value.rstrip("/")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parsed = urlsplit(origin)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
                raise ValueError(f"allowed_origins: {origin!r} is invalid; allowed: scheme://host[:port]")
        return tuple(o.rstrip("/").lower() for o in value)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(h.strip().lower().strip("[]") for h in value if h.strip())

    @field_validator("allowed_provider_options")
    @classmethod
    def _option_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            provider, dot, key = name.partition(".")
            if not (dot and provider.strip() and key.strip()):
                raise ValueError(f"allowed_provider_options: {name!r} is invalid; allowed: 'provider.key'")
        return value


def refuse_keyless_exposure(host: str, *, keys: bool, allowed: bool, keys_hint: str, allow_hint: str) -> None:
    """Raise `ValueError` when a server without keys would listen beyond loopback and that is not `allowed`.

    The one rule `lightning-client serve` and the Ray application builder apply before starting;
    the hints say how keys are given and how the operator allows it anyway.
    """
    if keys or allowed or is_loopback_host(host):
        return
    raise ValueError(
        f"refusing to listen on {host} without an API key: give {keys_hint}, listen on 127.0.0.1, or pass {allow_hint}"
    )


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
    max_files: int = Field(default=1000, ge=1)
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, ge=1)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1)
    public_url: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_provider_options: list[str] = Field(default_factory=list)
    docs: bool = False


def server_section(config: Path | None) -> ServerSection:
    """The `[server]` table of the configuration file `config` (defaults without a file or table).

    Raises `ConfigurationError` (a `ValueError`) naming the key of any problem in the file.
    """
    if config is None:
        return ServerSection()
    from lightning_client.config import read_config

    return read_config(config).section("server", ServerSection)
