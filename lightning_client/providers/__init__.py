"""Backends: one module per provider, registered by name."""

from __future__ import annotations

import importlib
from typing import Any

#: name -> "module:Class". Adding a provider means one module and one entry here.
REGISTRY: dict[str, str] = {
    "replicate": "lightning_client.providers.replicate:ReplicateGenerator",
    "fal": "lightning_client.providers.fal:FalGenerator",
    "local": "lightning_client.providers.local:LocalGenerator",
    "remote": "lightning_client.providers.remote:RemoteGenerator",
}


def generator_class(name: str) -> Any:
    """The generator class registered under `name`."""
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["REGISTRY", "generator_class"]
