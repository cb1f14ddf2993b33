"""fal.ai: `FalGenerator` over the queue API, its realtime session and its pricing."""

from __future__ import annotations

from lightning_client.providers.fal.generator import DEFAULT_APP, DEFAULT_QUEUE_URL, SANDBOX_KEY, FalGenerator, fal_key

__all__ = ["DEFAULT_APP", "DEFAULT_QUEUE_URL", "SANDBOX_KEY", "FalGenerator", "fal_key"]
