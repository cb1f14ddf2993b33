"""Backends: one module per provider, registered by kind in `lightning_client.registry`."""

from __future__ import annotations

from lightning_client.registry import REGISTRY, generator_class, provider_kinds, register

__all__ = ["REGISTRY", "generator_class", "provider_kinds", "register"]
