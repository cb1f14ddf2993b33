"""pytest fixtures for the provider sandbox (registered through the `pytest11` entry point).

- `lightning_sandbox`: one `Sandbox` for the whole test session, started the first time a test asks for it.
- `replicate_sandbox` / `fal_sandbox`: that sandbox's provider handles, reset to defaults (settings, jobs and
  counters) before each test that uses them.
- `lightning_sandbox_tls`: a second session `Sandbox(tls=True)` (HTTPS, its own CA), reset before each test;
  `lightning_sandbox_tls.env()` holds the variables that make clients trust it.

Nothing is imported or started unless a test requests one of these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lightning_client.testing.sandbox import ProviderHandle, Sandbox

__all__ = ["fal_sandbox", "lightning_sandbox", "lightning_sandbox_tls", "replicate_sandbox"]


@pytest.fixture(scope="session")
def lightning_sandbox() -> Iterator[Sandbox]:
    """A running `Sandbox` (Replicate and fal) shared by the session; stopped at the end."""
    from lightning_client.testing.sandbox import Sandbox

    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def replicate_sandbox(lightning_sandbox: Sandbox) -> Iterator[ProviderHandle]:
    """The shared sandbox's Replicate handle, reset before the test; its `url` is the client base URL."""
    lightning_sandbox.replicate.reset()
    yield lightning_sandbox.replicate


@pytest.fixture
def fal_sandbox(lightning_sandbox: Sandbox) -> Iterator[ProviderHandle]:
    """The shared sandbox's fal handle, reset before the test; its `url` is the queue base URL."""
    lightning_sandbox.fal.reset()
    lightning_sandbox.fal_realtime.reset()
    yield lightning_sandbox.fal


@pytest.fixture(scope="session")
def _lightning_sandbox_tls_session() -> Iterator[Sandbox]:
    from lightning_client.testing.sandbox import Sandbox

    with Sandbox(tls=True) as sandbox:
        yield sandbox


@pytest.fixture
def lightning_sandbox_tls(_lightning_sandbox_tls_session: Sandbox) -> Iterator[Sandbox]:
    """A running HTTPS `Sandbox(tls=True)` shared by the session, both providers reset before the test."""
    _lightning_sandbox_tls_session.replicate.reset()
    _lightning_sandbox_tls_session.fal.reset()
    yield _lightning_sandbox_tls_session
