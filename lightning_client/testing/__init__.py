"""Test helpers for users' CI and ours: the provider sandbox and tiny local pipelines."""

from __future__ import annotations

import importlib
from typing import Any

#: The endpoints a sandbox emulates, in the order `Sandbox(port=N)` gives them ports N, N+1, ...
ENDPOINTS = ("replicate", "fal", "fal_run", "fal_rest")

_LAZY = {
    "Latency": "lightning_client.testing.sandbox",
    "Sandbox": "lightning_client.testing.sandbox",
    "build_tiny_lightning": "lightning_client.testing.tiny",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_client.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["ENDPOINTS", "Latency", "Sandbox", "build_tiny_lightning"]
