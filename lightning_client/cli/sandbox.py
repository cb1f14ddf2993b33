"""`lightning-client sandbox` (kept importable here; it lives with the sandbox in `lightning_client.testing.command`)."""

from __future__ import annotations

from lightning_client.testing.command import load_config, sandbox

__all__ = ["load_config", "sandbox"]
