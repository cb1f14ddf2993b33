"""The emulator registry: every provider the sandbox emulates, the endpoints it serves and how it is built.

Light on purpose (no server imports): `lightning_client.testing.ENDPOINTS` and the command line read it
without starting anything. Adding an emulated provider is one module, which builds its `Emulation`, and
one registration (a line in `_BUILT_IN`, or `register_emulator(...)` from another package):

```python
register_emulator(Emulator("acme", ("acme",), "acme_sandbox:build"))
```

`Sandbox(port=N)` gives the endpoints of every registered emulator ports N, N+1, ... in registration order.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lightning_client.errors import ConfigurationError

if TYPE_CHECKING:
    from lightning_client.testing._provider import ProviderCore

__all__ = ["ASGIApp", "Emulation", "Emulator", "emulator", "emulators", "endpoint_names", "register_emulator"]

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Emulation(Protocol):
    """One emulated provider inside one sandbox: its state and the apps that serve it."""

    #: Settings, jobs and counters: what the sandbox's handle configures, resets and reports.
    core: ProviderCore

    def apps(self, urls: Mapping[str, str]) -> Mapping[str, ASGIApp]:
        """The ASGI app of each of its endpoints, given each endpoint's base URL (called once, at start)."""
        ...


@dataclass(frozen=True)
class Emulator:
    """An emulated provider, as the registry lists it."""

    #: Its provider kind in `lightning_client.registry` (whose generator class gives `sandbox_environment`)
    #: and the name of its handle, `Sandbox.provider(name)`.
    name: str
    #: The names of the endpoints it serves, in port order; the first is its handle's `url`.
    endpoints: tuple[str, ...]
    #: `build(seed)` gives its `Emulation`: the function itself, or "module:function", imported when a
    #: sandbox is made.
    build: str | Callable[[int], Emulation]
    #: Extra environment settings `Sandbox.env()` gives while it is served (for its official clients).
    environment: Mapping[str, str] = field(default_factory=dict)

    def emulation(self, seed: int) -> Emulation:
        """A new emulation of this provider for a sandbox with `seed`."""
        build = self.build
        if isinstance(build, str):
            module, _, attribute = build.partition(":")
            build = getattr(importlib.import_module(module), attribute)
        return build(seed)


_BUILT_IN = (
    Emulator(
        "replicate",
        ("replicate",),
        "lightning_client.testing._replicate_app:ReplicateEmulation",
        {"REPLICATE_POLL_INTERVAL": "0.05"},
    ),
    Emulator("fal", ("fal", "fal_run", "fal_rest"), "lightning_client.testing._fal_emulator:FalEmulation"),
)

_lock = threading.Lock()
_EMULATORS: dict[str, Emulator] = {e.name: e for e in _BUILT_IN}


def register_emulator(emulator: Emulator) -> None:
    """Add `emulator` after those registered; ValueError when its name or an endpoint name is taken.

    Sandboxes made from now on serve it; running ones do not change.
    """
    if not emulator.name or not emulator.endpoints:
        raise ValueError("an emulator needs a name and at least one endpoint")
    with _lock:
        if emulator.name in _EMULATORS:
            raise ValueError(f"an emulator named {emulator.name!r} is already registered")
        taken = sorted(set(emulator.endpoints) & set(_endpoints()))
        if taken or len(set(emulator.endpoints)) < len(emulator.endpoints):
            raise ValueError(f"emulator {emulator.name!r}: endpoint names taken or repeated: {emulator.endpoints}")
        _EMULATORS[emulator.name] = emulator


def emulators() -> tuple[Emulator, ...]:
    """Every registered emulator, in registration (port) order."""
    with _lock:
        return tuple(_EMULATORS.values())


def emulator(name: str) -> Emulator:
    """The emulator registered as `name`; `ConfigurationError` naming the registered ones otherwise."""
    with _lock:
        found = _EMULATORS.get(name)
        allowed = ", ".join(_EMULATORS)
    if found is None:
        raise ConfigurationError(f"the sandbox emulates no provider {name!r}; allowed: {allowed}", path="sandbox")
    return found


def endpoint_names() -> tuple[str, ...]:
    """Every registered endpoint, in the order `Sandbox(port=N)` gives them ports N, N+1, ..."""
    with _lock:
        return _endpoints()


def _endpoints() -> tuple[str, ...]:
    return tuple(name for e in _EMULATORS.values() for name in e.endpoints)
