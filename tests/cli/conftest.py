"""CLI test helpers: a runner without provider keys, and a sandbox on consecutive ports for --sandbox-url."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from lightning_client.testing.sandbox import Sandbox

KEY_VARIABLES = ("REPLICATE_API_TOKEN", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner in an environment with no provider keys and a wide terminal."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture
def port_sandbox() -> Iterator[Sandbox]:
    """A sandbox serving Replicate on port N and fal on N+1..N+3, as `lightning-client sandbox --port N` does."""
    for _ in range(20):
        sandbox = Sandbox(port=random.randrange(20_000, 60_000))
        try:
            sandbox.start()
        except OSError:
            continue
        try:
            yield sandbox
        finally:
            sandbox.stop()
        return
    pytest.fail("no four consecutive free ports found")
