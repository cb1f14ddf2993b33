"""Acme's generator and emulator, each registered with one line (for these tests only: the registries
are restored after each)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lightning_client import registry
from lightning_client.testing import Sandbox, emulators
from lightning_client.testing.emulators import Emulator, register_emulator


@pytest.fixture
def acme_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox serving Acme (next to fal, for failover), with Acme registered as a provider."""
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.setattr(emulators, "_EMULATORS", dict(emulators._EMULATORS))
    registry.register("acme", "acme_provider:AcmeGenerator")
    register_emulator(Emulator("acme", ("acme",), "acme_emulator:AcmeEmulation"))
    with Sandbox(replicate=False) as sb:
        yield sb
