"""The router prefers native step counts; cancelling a caller never gets swallowed by a hedge's loser wait."""

from __future__ import annotations

import asyncio

import pytest

import lightning_client as lc
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.result import Cost, GeneratedImage
from lightning_client.routing import HedgeConfig
from lightning_client.testing import Sandbox

SMALL = {"width": 256, "height": 256}


def test_native_steps_are_preferred_over_emulation(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([rep, fal])
    result = router.generate("a lighthouse", steps=2, **SMALL)
    assert result.provider == "fal"
    assert [a.provider for a in result.attempts] == ["fal"]  # no Replicate attempt at all
    assert not [w for w in result.warnings if w.kind == "emulated"]
    assert sb.replicate.stats()["created"] == 0
    # Where both serve the step count natively, the policy's order stands.
    assert router.generate("a lighthouse", steps=4, **SMALL).provider == "replicate"


def test_emulation_still_serves_when_the_native_generator_fails(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.fal.configure(error_status=409)
    router = lc.Router([rep, fal], retries=0)
    result = router.generate("a lighthouse", steps=2, **SMALL)
    assert [a.provider for a in result.attempts] == ["fal", "replicate"]
    assert result.provider == "replicate" and [w.kind for w in result.warnings] == ["emulated"]


class _Fast(BaseGenerator):
    name = "fast"
    model = "scripted"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _generate(self, ctx: AttemptContext) -> lc.GenerationResult:
        await asyncio.sleep(0.2)
        image = GeneratedImage(data=b"\x89PNG", width=64, height=64, content_type="image/png")
        return ctx.result([image], model=self.model, cost=Cost(usd=0.001, basis="scripted", estimated=False))


class _SlowToCancel(BaseGenerator):
    """Runs forever; cancelling it takes a second (a slow remote cancel)."""

    name = "slow"
    model = "scripted"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _generate(self, ctx: AttemptContext) -> lc.GenerationResult:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(1.0))
            raise
        raise AssertionError("unreachable")


async def test_cancelling_the_caller_while_the_hedge_waits_for_its_loser_propagates() -> None:
    router = lc.Router([_SlowToCancel(), _Fast()], hedge=HedgeConfig(delay_s=0.05, cancel_wait_s=5.0))
    task = asyncio.ensure_future(router.agenerate("x"))
    await asyncio.sleep(0.6)  # the fast one has won; the router waits for the loser to cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await router.aclose()
    assert [a.outcome for a in router.ledger.records()] == ["canceled", "succeeded"]
