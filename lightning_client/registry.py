"""The provider registry: provider kind -> generator class.

Filled from the package's own providers and from the entry-point group
`lightning_client.providers`, so a separate package adds a provider without touching
this one. In its `pyproject.toml`::

    [project.entry-points."lightning_client.providers"]
    acme = "acme_lightning:AcmeGenerator"

Kinds are case-insensitive. Classes are imported on first lookup, never at import time.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any

from lightning_client._log import get_logger
from lightning_client.errors import ConfigurationError, UnknownProviderError

__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "generator_class", "provider_kinds", "register"]

log = get_logger("lightning_client.registry")

ENTRY_POINT_GROUP = "lightning_client.providers"

#: kind -> "module:Class" (or the class itself). Adding a provider to the package means one
#: module and one entry here; other packages use the entry-point group instead.
REGISTRY: dict[str, Any] = {
    "replicate": "lightning_client.providers.replicate:ReplicateGenerator",
    "fal": "lightning_client.providers.fal:FalGenerator",
    "local": "lightning_client.providers.local:LocalGenerator",
    "remote": "lightning_client.providers.remote:RemoteGenerator",
}

_lock = threading.Lock()
_plugins_loaded = False
#: kind -> the entry point that registered it ("name = module:Class"), for error messages.
_ENTRY_POINTS: dict[str, str] = {}


def _load_plugins() -> None:
    """Add the entry points of installed packages (once); the package's own kinds win a clash."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            kind = point.name.strip().lower()
            if kind in REGISTRY:
                if REGISTRY[kind] != point.value:
                    log.warning("provider entry point %r (%s) ignored: the kind is taken", point.name, point.value)
                continue
            REGISTRY[kind] = point.value
            _ENTRY_POINTS[kind] = f"{point.name} = {point.value}"


def register(kind: str, target: Any) -> None:
    """Register a generator class (or its "module:Class" path) under `kind` at run time."""
    key = kind.strip().lower()
    if not key:
        raise ConfigurationError("a provider kind must be a non-empty name", path="kind")
    REGISTRY[key] = target


def provider_kinds() -> list[str]:
    """Every registered kind, sorted (built-in and from entry points)."""
    _load_plugins()
    return sorted(REGISTRY)


def generator_class(kind: str) -> Any:
    """The generator class registered under `kind` (case-insensitive).

    Raises `UnknownProviderError` (a `ValueError`) listing every valid kind.
    """
    _load_plugins()
    key = str(kind).strip().lower()
    target = REGISTRY.get(key)
    if target is None:
        raise UnknownProviderError(
            f"provider {kind!r} is not supported; available: {', '.join(sorted(REGISTRY))}", path="kind"
        )
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    try:
        value = importlib.import_module(module)
        for part in attribute.split(".") if attribute else ():
            value = getattr(value, part)
    except Exception as exc:  # a plugin may fail in any way while importing: name where it came from
        point = _ENTRY_POINTS.get(key)
        source = f"entry point {point!r} (group {ENTRY_POINT_GROUP})" if point else repr(target)
        raise ConfigurationError(
            f"provider {key!r} could not be loaded from {source}: {type(exc).__name__}: {exc}", path="kind"
        ) from exc
    return value
