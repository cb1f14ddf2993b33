"""Test helpers for users' CI and ours: the provider sandbox and tiny local pipelines."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Latency": "lightning_client.testing.sandbox",
    "Sandbox": "lightning_client.testing.sandbox",
    "build_tiny_lightning": "lightning_client.testing.tiny",
}


def __getattr__(name: str) -> Any:
    if name == "ENDPOINTS":
        # The endpoints a sandbox emulates, in the order `Sandbox(port=N)` gives them ports N, N+1, ...
        # (read from the emulator registry each time, so emulators registered at run time count).
        from lightning_client.testing.emulators import endpoint_names

        return endpoint_names()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_client.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["ENDPOINTS", "Latency", "Sandbox", "build_tiny_lightning"]
