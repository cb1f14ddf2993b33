"""Availability: refused creates (503) are sent again in place; creates that may exist are never sent twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


async def _run(router: lc.Router, requests: int, concurrency: int) -> list[lc.GenerationResult | BaseException]:
    """`requests` generations with distinct prompts, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> lc.GenerationResult:
        async with gate:
            return await router.agenerate(f"a lighthouse, take {index}", width=256, height=256, timeout_s=120)

    return await asyncio.gather(*(one(i) for i in range(requests)), return_exceptions=True)


def _router(sb: Sandbox) -> lc.Router:
    return lc.Router([lc.ReplicateGenerator.for_sandbox(sb), lc.FalGenerator.for_sandbox(sb)])


async def test_two_providers_at_20_percent_503s_serve_at_least_297_of_300(sb: Sandbox) -> None:
    sb.replicate.configure(error_rate=0.2)
    sb.fal.configure(error_rate=0.2)
    async with _router(sb) as router:
        outcomes = await _run(router, 300, 30)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(outcomes) - len(failures) >= 297, failures[:3]
    assert not [o for o in failures if not isinstance(o, lc.LightningError)]


async def test_gateway_errors_on_replicate_never_create_two_predictions_for_one_request(sb: Sandbox) -> None:
    sb.replicate.configure(fault="gateway_error", error_rate=0.2)
    sb.fal.configure(error_rate=0.2)
    async with _router(sb) as router:
        outcomes = await _run(router, 60, 30)
    per_prompt = Counter(str(job["input"].get("prompt")) for job in sb.replicate.jobs())
    assert per_prompt and max(per_prompt.values()) == 1
    served = [o for o in outcomes if isinstance(o, lc.GenerationResult)]
    assert len(served) >= 58
