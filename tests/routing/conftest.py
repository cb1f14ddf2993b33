"""One sandbox for the routing tests, reset before each; real generators pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox


@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(module_sandbox: Sandbox) -> Sandbox:
    module_sandbox.replicate.reset()
    module_sandbox.fal.reset()
    return module_sandbox


@pytest.fixture
def rep(sb: Sandbox) -> Iterator[lc.ReplicateGenerator]:
    generator = lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url)
    yield generator
    generator.close()


@pytest.fixture
def fal(sb: Sandbox) -> Iterator[lc.FalGenerator]:
    generator = lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)
    yield generator
    generator.close()
