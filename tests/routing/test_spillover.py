"""Spill-over: `Router(max_wait_s=...)` skips a generator whose expected wait is above the limit."""

from __future__ import annotations

import asyncio

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox


class Loaded(lc.ReplicateGenerator):
    """A real Replicate generator (on the sandbox) reporting a chosen expected wait."""

    def __init__(self, sb: Sandbox, wait: float | None, *, name: str = "replicate") -> None:
        super().__init__(api_key="r8_test", base_url=sb.replicate_url)
        self.name = name
        self.wait = wait
        self.refreshes = 0

    def expected_wait_s(self) -> float | None:
        return self.wait


class Refreshing(Loaded):
    """Learns its expected wait only in `refresh_expected_wait` (as a remote server's would be)."""

    def __init__(self, sb: Sandbox, learned: float, *, hang: bool = False) -> None:
        super().__init__(sb, None)
        self.learned = learned
        self.hang = hang

    async def refresh_expected_wait(self) -> None:
        self.refreshes += 1
        if self.hang:
            await asyncio.sleep(3600)
        self.wait = self.learned


async def test_a_busy_generator_is_skipped_with_its_figure(sb: Sandbox, fal: lc.FalGenerator) -> None:
    async with lc.Router([Loaded(sb, 5.0), fal], max_wait_s=2.0) as router:
        result = await router.agenerate("a fox", steps=2, width=256, height=256)
    assert result.provider == "fal"
    skipped = result.attempts[0]
    assert skipped.provider == "replicate" and skipped.outcome == "skipped"
    assert skipped.note is not None and "5.00s" in skipped.note and "max_wait_s=2s" in skipped.note
    assert [a.outcome for a in router.ledger.records()] == ["skipped", "succeeded"]


async def test_a_generator_that_keeps_up_serves(sb: Sandbox, fal: lc.FalGenerator) -> None:
    async with lc.Router([Loaded(sb, 0.5), fal], max_wait_s=2.0) as router:
        result = await router.agenerate("a fox", steps=4, width=256, height=256)  # native on both
    assert result.provider == "replicate"
    assert [a.outcome for a in result.attempts] == ["succeeded"]


async def test_unknown_wait_is_not_skipped_and_no_limit_never_skips(sb: Sandbox, fal: lc.FalGenerator) -> None:
    async with lc.Router([Loaded(sb, None), fal], max_wait_s=0.0) as router:
        assert (await router.agenerate("a fox", width=256, height=256)).provider == "replicate"
    async with lc.Router([Loaded(sb, 99.0), lc.FalGenerator(api_key="k", base_url=sb.fal_url)]) as router:
        assert (await router.agenerate("a fox", width=256, height=256)).provider == "replicate"


async def test_when_all_are_busy_the_least_busy_is_tried(sb: Sandbox) -> None:
    generators = [Loaded(sb, 9.0, name="slow"), Loaded(sb, 4.0, name="less-slow")]
    async with lc.Router(generators, max_wait_s=1.0) as router:
        result = await router.agenerate("a fox", width=256, height=256)
    assert result.provider == "less-slow"
    assert [(a.provider, a.outcome) for a in result.attempts] == [("slow", "skipped"), ("less-slow", "succeeded")]


async def test_the_refresh_hook_runs_before_choosing(sb: Sandbox, fal: lc.FalGenerator) -> None:
    remote = Refreshing(sb, learned=3.0)
    async with lc.Router([remote, fal], max_wait_s=2.0) as router:
        result = await router.agenerate("a fox", width=256, height=256)
    assert remote.refreshes == 1
    assert result.provider == "fal" and result.attempts[0].outcome == "skipped"


async def test_a_hanging_refresh_is_bounded(sb: Sandbox, fal: lc.FalGenerator) -> None:
    remote = Refreshing(sb, learned=3.0, hang=True)
    async with lc.Router([remote, fal], max_wait_s=2.0) as router:
        result = await asyncio.wait_for(router.agenerate("a fox", width=256, height=256), 30)
    assert result.provider == "replicate"  # its figure stayed unknown


def test_max_wait_s_must_not_be_negative(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        lc.Router([Loaded(sb, 1.0)], max_wait_s=-1)
