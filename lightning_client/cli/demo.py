"""`lightning-client demo` (kept importable here; it lives with the sandbox in `lightning_client.testing.demo`)."""

from __future__ import annotations

from lightning_client.testing.demo import demo

__all__ = ["demo"]
