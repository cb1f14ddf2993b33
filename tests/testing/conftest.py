"""Helpers for the sandbox tests: plain httpx clients pointed at the shared sandbox's providers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from lightning_client.testing.sandbox import ProviderHandle, Sandbox


@pytest.fixture
def rep(replicate_sandbox: ProviderHandle) -> Iterator[httpx.Client]:
    """An authenticated client on the Replicate emulator (reset for this test)."""
    with httpx.Client(
        base_url=replicate_sandbox.url, headers={"Authorization": "Bearer r8_test"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def fal(fal_sandbox: ProviderHandle) -> Iterator[httpx.Client]:
    """An authenticated client on the fal queue emulator (reset for this test)."""
    with httpx.Client(base_url=fal_sandbox.url, headers={"Authorization": "Key id:secret"}, timeout=10) as client:
        yield client


@pytest.fixture
def fal_run(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> Iterator[httpx.Client]:
    """An authenticated client on the fal sync-run emulator."""
    with httpx.Client(
        base_url=lightning_sandbox.fal_run_url, headers={"Authorization": "Key id:secret"}, timeout=10
    ) as c:
        yield c


def sandbox_on_a_fixed_port() -> tuple[Sandbox, int]:
    """A started `Sandbox(port=N)` and its N: a free port is probed, and another tried when another
    process takes one of the consecutive ports between the probe and the bind."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            return Sandbox(port=port).start(), port
        except OSError:
            continue
    raise AssertionError("no run of consecutive free ports found")
