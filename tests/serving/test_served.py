"""What is served: the one builder (`assembly.build_served`) and the contract the server reads it through."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.assembly import build_served
from lightning_client.errors import InvalidRequestError, ProviderUnavailableError
from lightning_client.serving.served import Batching, Preloading, Served
from lightning_client.testing import Sandbox
from tests.serving.conftest import Failing


class Counting(Failing):
    """A generator that preloads and counts its pipeline calls."""

    def __init__(self) -> None:
        super().__init__(ProviderUnavailableError("not used"))
        self.loaded = 0

    async def aload(self) -> float:
        self.loaded += 1
        return 0.0

    @property
    def pipeline_calls(self) -> int:
        return 3


def test_a_lone_generator_is_served_as_it_is_and_takes_only_its_own_name() -> None:
    generator = Failing(ProviderUnavailableError("down"))
    assert build_served(local=generator) is generator
    served = Served(generator)
    assert not served.routes and served.generators == [generator] and served.ledger is None
    assert served.breakers == {} and served.batching == [] and served.model == ""
    assert served.order(["failing"]) is None
    with pytest.raises(InvalidRequestError, match="serves only 'failing'"):
        served.order(["other"])


def test_a_ledger_or_a_wait_limit_asks_for_a_router(tmp_path: Path) -> None:
    generator = Counting()
    router = build_served(local=generator, ledger=tmp_path / "ledger.sqlite")
    assert isinstance(router, lc.Router) and router.generators == [generator]
    router.ledger.close()
    spilling = build_served(local=Counting(), max_wait_s=1.0)
    assert isinstance(spilling, lc.Router) and spilling.max_wait_s == 1.0


def test_hosted_providers_come_after_the_local_one(sandbox: Sandbox) -> None:
    generator = Counting()
    router = build_served(local=generator, hosted=["fal"], sandbox=sandbox)
    assert isinstance(router, lc.Router)
    served = Served(router)
    assert served.routes and [g.name for g in served.generators] == ["failing", "fal"]
    assert set(served.breakers) == {"failing", "fal"} and served.ledger is router.ledger
    assert served.batching == [generator] and isinstance(generator, Batching) and isinstance(generator, Preloading)
    asyncio.run(served.aload())
    assert generator.loaded == 1
    with pytest.raises(ValueError, match="nothing to serve"):
        build_served()
