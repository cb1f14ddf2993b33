"""Replicate: `ReplicateGenerator` over the predictions API, with its create recovery."""

from __future__ import annotations

from lightning_client.providers.replicate.generator import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    SANDBOX_TOKEN,
    ReplicateGenerator,
    replicate_token,
)

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "SANDBOX_TOKEN", "ReplicateGenerator", "replicate_token"]
