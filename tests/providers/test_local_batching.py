"""LocalGenerator's queue on the real tiny pipeline: dynamic batching, per-job cancel, step grouping, expected wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import lightning_client as lc
from lightning_client.providers.local import LocalGenerator
from lightning_client.testing.tiny import TinyLightning, build_tiny_lightning

PROMPTS = ["a red fox", "a blue cat", "an owl", "a green frog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
async def batching(tiny: TinyLightning) -> AsyncIterator[LocalGenerator]:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", max_batch_size=4
    )
    await generator.aload(2)
    yield generator
    await generator.aclose()


def request(index: int, *, steps: int = 2, size: int = 64, **fields: object) -> lc.GenerationRequest:
    return lc.GenerationRequest(
        prompt=PROMPTS[index % len(PROMPTS)], steps=steps, width=size, height=size, seed=100 + index, **fields
    )


async def test_eight_concurrent_requests_take_at_most_three_calls_and_equal_alone(batching: LocalGenerator) -> None:
    requests = [request(i) for i in range(8)]
    before = batching.pipeline_calls
    together = await asyncio.gather(*(batching.agenerate(r) for r in requests))
    assert batching.pipeline_calls - before <= 3
    for req, result in zip(requests, together, strict=True):
        calls = batching.pipeline_calls
        alone = await batching.agenerate(req)
        assert batching.pipeline_calls == calls + 1  # served alone
        assert result.images[0].data == alone.images[0].data
        assert result.seed == req.seed and result.prompt == req.prompt


async def test_batched_cost_is_shared_by_images(batching: LocalGenerator) -> None:
    results = await asyncio.gather(*(batching.agenerate(request(i, num_images=2)) for i in range(2)))
    shared = [r for r in results if "of one call" in r.cost.basis]
    assert shared, [r.cost.basis for r in results]
    for result in shared:
        assert "2 of 4 images" in result.cost.basis
        assert result.cost.usd == pytest.approx((result.timings.inference_s or 0) / 2 * 0.36 / 3600)


async def test_images_of_one_request_are_split_back_in_order(batching: LocalGenerator) -> None:
    first, second = request(0, num_images=3), request(1)
    together = await asyncio.gather(batching.agenerate(first), batching.agenerate(second))
    assert [len(r.images) for r in together] == [3, 1]
    for index in range(3):
        alone = await batching.agenerate(request(0).model_copy(update={"seed": first.seed + index}))
        assert together[0].images[index].data == alone.images[0].data


async def test_cancelling_one_request_leaves_its_batch_at_the_next_step(tiny: TinyLightning) -> None:
    steps_seen: list[int] = []
    cancel_at_first_step = asyncio.Event()

    def progress(step: int, total: int) -> None:
        steps_seen.append(step)
        cancel_at_first_step.set()

    generator = LocalGenerator(
        base_model=str(tiny.base),
        lightning_repo=str(tiny.lightning),
        device="cpu",
        max_batch_size=4,
        progress=progress,
    )
    async with generator:
        await generator.aload(8)
        requests = [request(i, steps=8, size=128) for i in range(3)]
        tasks = [asyncio.create_task(generator.agenerate(r)) for r in requests]
        await cancel_at_first_step.wait()
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert generator.pipeline_calls == 1  # the others stayed in the one call
        # Each step reports once per job still in the batch: 3 jobs at step 1, then fewer.
        assert steps_seen.count(8) == 2 and steps_seen.count(1) == 3
        for index in (0, 2):
            result = done[index]
            assert isinstance(result, lc.GenerationResult)
            alone = await generator.agenerate(requests[index])
            assert result.images[0].data == alone.images[0].data


async def test_a_cancelled_queued_request_never_runs(tiny: TinyLightning) -> None:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", max_batch_size=1
    )
    async with generator:
        await generator.aload(8)
        running = asyncio.create_task(generator.agenerate(request(0, steps=8, size=128)))
        queued = asyncio.create_task(generator.agenerate(request(1, steps=8, size=128)))
        await asyncio.sleep(0.05)
        queued.cancel()
        await running
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert generator.pipeline_calls == 1


async def test_alternating_step_counts_do_not_swap_checkpoints_every_job(tiny: TinyLightning) -> None:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", max_batch_size=1
    )
    async with generator:
        await generator.aload(4)
        loads = generator.checkpoint_loads
        blocker = asyncio.create_task(generator.agenerate(request(0, steps=4, size=192)))
        await asyncio.sleep(0.05)  # the blocker is on the device; the rest queue behind it
        alternating = [request(i, steps=2 if i % 2 else 4) for i in range(1, 7)]
        results = await asyncio.gather(blocker, *(generator.agenerate(r) for r in alternating))
        assert all(r.images for r in results)
        # Served 4, 4, then the 2-step jobs (the oldest was overtaken twice), then the last 4:
        # two swaps where first-in-first-out would swap on each of the six jobs.
        assert generator.checkpoint_loads - loads == 2


async def test_expected_wait_is_queue_depth_times_observed_job_time(tiny: TinyLightning) -> None:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", max_batch_size=1
    )
    async with generator:
        assert generator.expected_wait_s() is None  # nothing observed yet
        await generator.agenerate(request(0))
        assert generator.expected_wait_s() == 0.0  # idle
        per_job = generator._job_s
        assert per_job is not None and per_job > 0
        tasks = [asyncio.create_task(generator.agenerate(request(i))) for i in range(3)]
        await asyncio.sleep(0.02)
        wait = generator.expected_wait_s()
        assert wait is not None and wait == pytest.approx(3 * per_job)
        await asyncio.gather(*tasks)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_batch_size": 0}, "max_batch_size"), ({"batch_wait_s": 5.0}, "batch_wait_s")],
)
def test_bad_batching_options_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(lc.InvalidRequestError, match=field) as info:
        LocalGenerator(base_model="/nowhere", device="cpu", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
