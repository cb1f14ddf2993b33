"""A second cancellation while an abandoned job is being cancelled still records what the job cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import lightning_client as lc
from lightning_client.generator import observe_attempts
from lightning_client.result import Attempt
from lightning_client.testing import Sandbox
from lightning_client.testing.sandbox import ProviderHandle


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


class _SlowCancel:
    """Makes the remote cancel take `delay_s`, so a second cancellation lands while it runs."""

    delay_s = 0.3
    cancelling: asyncio.Event

    async def _cancel(self, *args: Any) -> Any:
        self.cancelling.set()
        await asyncio.sleep(self.delay_s)
        return await super()._cancel(*args)  # type: ignore[misc]


class SlowCancelFal(_SlowCancel, lc.FalGenerator):
    pass


class SlowCancelReplicate(_SlowCancel, lc.ReplicateGenerator):
    pass


async def _until_running(handle: ProviderHandle, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(job["status"] in ("running", "processing") for job in handle.jobs()):
        assert time.monotonic() < deadline, "the job did not start"
        await asyncio.sleep(0.02)


async def _cancel_twice(sb: Sandbox, generator: _SlowCancel, provider: str) -> Attempt:
    """Start a generation, cancel it once it runs, and again while its job is being cancelled."""
    generator.cancelling = asyncio.Event()
    ended: list[Attempt] = []
    with observe_attempts(lambda event, attempt: ended.append(attempt) if event == "end" else None):
        task = asyncio.ensure_future(generator.agenerate("a fox", width=256, height=256))  # type: ignore[attr-defined]
    handle = getattr(sb, provider)
    await _until_running(handle)
    await asyncio.sleep(0.1)  # the generator has seen it start
    task.cancel()
    await asyncio.wait_for(generator.cancelling.wait(), 30)
    task.cancel()  # the second cancellation, during the remote cancel
    with pytest.raises(asyncio.CancelledError):
        await task
    await generator.aclose()  # type: ignore[attr-defined]
    assert len(ended) == 1
    return ended[0]


async def test_fal_prices_a_started_request_cancelled_twice(sb: Sandbox) -> None:
    sb.fal.configure(inference_s=30.0)
    attempt = await _cancel_twice(sb, SlowCancelFal.for_sandbox(sb), "fal")  # type: ignore[arg-type]
    assert attempt.outcome == "canceled" and sb.fal.stats()["canceled"] == 1
    assert attempt.cost.basis.startswith("abandoned") and attempt.cost.usd is not None and attempt.cost.usd > 0


async def test_replicate_prices_a_started_prediction_cancelled_twice(sb: Sandbox) -> None:
    sb.replicate.configure(inference_s=30.0)
    attempt = await _cancel_twice(sb, SlowCancelReplicate.for_sandbox(sb), "replicate")  # type: ignore[arg-type]
    assert attempt.outcome == "canceled" and sb.replicate.stats()["canceled"] == 1
    assert attempt.cost.basis and "predict_time" in attempt.cost.basis


async def test_a_cost_that_cannot_be_computed_is_unknown_not_zero(sb: Sandbox) -> None:
    sb.fal.configure(inference_s=30.0)
    generator = SlowCancelFal.for_sandbox(sb, cancel_timeout_s=0.2)
    generator.delay_s = 0.25  # the cancel runs out of time: nothing says what the request cost
    attempt = await _cancel_twice(sb, generator, "fal")
    assert attempt.outcome == "canceled" and attempt.cost.usd is None
