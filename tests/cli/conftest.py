"""CLI test helpers: a runner without provider keys, and a sandbox on consecutive ports for --sandbox-url."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lightning_client.testing.sandbox import Sandbox

KEY_VARIABLES = ("REPLICATE_API_TOKEN", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")


def batch_command(sandbox: Sandbox, prompts: Path, out: Path, concurrency: int) -> tuple[list[str], dict[str, str]]:
    """`lightning-client batch` against `sandbox` as a child process, and an environment without provider keys."""
    command = [sys.executable, "-m", "lightning_client.cli", "batch", str(prompts), "--out", str(out)]
    command += ["--sandbox-url", sandbox.replicate_url, "--size", "256x256", "--concurrency", str(concurrency)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FAL_"))}
    return command, env


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
