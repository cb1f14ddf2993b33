"""LocalGenerator realtime sessions on the tiny offline pipeline: a superseded job stops at its next step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import lightning_client as lc
from lightning_client.providers.local import LocalGenerator
from lightning_client.testing.tiny import TinyLightning, build_tiny_lightning
from tests.realtime.conftest import Until


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def gen(tiny: TinyLightning, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalGenerator]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
    yield generator
    generator.close()


class StepGate:
    """Counts UNet calls (one per denoising step at guidance 0) and holds the worker inside call `hold_at`."""

    def __init__(self, hold_at: int) -> None:
        self.hold_at = hold_at
        self.calls = 0
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, module: Any, args: Any) -> None:
        self.calls += 1
        if self.calls == self.hold_at:
            self.held.set()
            self.release.wait(timeout=60)


async def test_superseding_send_stops_running_8_step_job_within_one_step(gen: LocalGenerator, until: Until) -> None:
    await gen.aload(8)
    gate = StepGate(hold_at=3)
    hook = gen.pipeline.unet.register_forward_pre_hook(gate)
    ledger = lc.Ledger()
    try:
        async with gen.realtime(throttle_s=0, ledger=ledger) as session:
            assert session.transport == "in-process"
            first = await session.send("a long eight step job", steps=8, width=64, height=64, seed=1)
            await asyncio.to_thread(gate.held.wait, 60)  # the job is inside its third step
            second = await session.send("the newer prompt", steps=2, width=64, height=64, seed=2)
            await until(lambda: any(a.outcome == "canceled" for a in ledger.records()))
            gate.release.set()  # step 3 finishes; the job must stop before step 4
            await session.finish()
            results = [r async for r in session]
    finally:
        gate.release.set()
        hook.remove()
    assert [r.send_id for r in results] == [second] and first == second - 1
    assert results[0].prompt == "the newer prompt" and not results[0].emulated
    # 3 steps of the superseded job (the one running when it was superseded included), then the 2 of the new one.
    assert gate.calls == 3 + 2
    by_prompt = {a.steps: a for a in ledger.records()}
    assert by_prompt[8].outcome == "canceled" and by_prompt[2].outcome == "succeeded"
    assert by_prompt[2].cost.usd > 0
    stats = session.stats()
    assert (stats.sent, stats.cancelled, stats.served) == (2, 1, 1)


async def test_frames_follow_sends(gen: LocalGenerator) -> None:
    async with gen.realtime(throttle_s=0) as session:
        for prompt in ("a", "a c", "a ca", "a cat"):
            await session.send(prompt, steps=1, width=64, height=64, seed=3, output_format="jpeg")
            await asyncio.sleep(0.02)
        await session.finish()
        results = [r async for r in session]
    assert results[-1].prompt == "a cat" and results[-1].images[0].to_pil().size == (64, 64)
    assert [r.send_id for r in results] == sorted({r.send_id for r in results})
