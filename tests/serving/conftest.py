"""Servers started by the tests themselves: `lightning-client serve` processes and in-thread apps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lightning_client.errors import LightningError
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.result import GenerationResult
from lightning_client.testing import Sandbox


@dataclass
class ServeProcess:
    """A running `lightning-client serve` and its base URL."""

    process: subprocess.Popen[str]
    url: str

    def stop(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """SIGTERM, wait; returns the exit status and everything written to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read()


def start_serve(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0) -> ServeProcess:
    """Start `lightning-client serve --port 0 ARGS` and wait for its startup line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_client", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"serving on (http://\S+)", line)
        if match:
            return ServeProcess(process, match.group(1))
    process.kill()
    _, err = process.communicate()
    raise AssertionError(f"`lightning-client serve {' '.join(args)}` did not start: {err[-3000:]}")


@pytest.fixture
def serve_process() -> Iterator[list[ServeProcess]]:
    """Processes started through this list are stopped at the end of the test."""
    started: list[ServeProcess] = []
    yield started
    for running in started:
        running.stop()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


class Failing(BaseGenerator):
    """A generator that fails with a given taxonomy error (the HTTP mapping is what is under test)."""

    name = "failing"

    def __init__(self, error: LightningError) -> None:
        self.error = error

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        raise self.error
