"""Never pay twice, never lose a job: unknown-outcome creates, adoption, late creates and unknown costs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import lightning_client as lc
from lightning_client.pricing import DEFAULT_PRICES, Price
from lightning_client.testing.sandbox import Sandbox

TOKEN = "r8_never_twice"
KEY = "never:twice"


def _rep(sb: Sandbox, **kwargs: object) -> lc.ReplicateGenerator:
    return lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url, **kwargs)  # type: ignore[arg-type]


def _fal(sb: Sandbox, **kwargs: object) -> lc.FalGenerator:
    return lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, rest_url=sb.fal_rest_url, **kwargs)  # type: ignore[arg-type]


def _request(**fields: object) -> lc.GenerationRequest:
    return lc.GenerationRequest(prompt="a harbour at dusk", width=256, height=256, seed=11, **fields)  # type: ignore[arg-type]


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture
def sb(lightning_sandbox: Sandbox) -> Sandbox:
    lightning_sandbox.replicate.reset()
    lightning_sandbox.fal.reset()
    return lightning_sandbox


async def test_replicate_gateway_error_adopts_the_prediction_and_never_creates_a_second(sb: Sandbox) -> None:
    sb.replicate.configure(fault="gateway_error")
    async with lc.Router([_rep(sb), _fal(sb)]) as router:
        result = await router.agenerate(_request(timeout_s=20))
    stats = sb.replicate.stats()
    assert stats["created"] == 1 and sb.fal.stats()["created"] == 0
    (job,) = sb.replicate.jobs()
    assert result.provider == "replicate" and result.request_id == job["id"]  # adopted: it served the result
    (attempt,) = [a for a in router.ledger.records() if a.provider == "replicate"]
    assert attempt.remote_ids == [job["id"]] and attempt.outcome == "succeeded"
    await asyncio.sleep(1.0)
    assert sb.replicate.stats()["running"] == 0


async def test_replicate_gateway_error_near_the_deadline_cancels_the_found_prediction(sb: Sandbox) -> None:
    # The create is answered 502 only after the deadline passed: the prediction is found and cancelled.
    sb.replicate.configure(fault="gateway_error", inference_s=30, create_latency_s=1.0)
    async with lc.Router([_rep(sb), _fal(sb)]) as router:
        with pytest.raises(lc.AllProvidersFailedError):
            await router.agenerate(_request(timeout_s=0.5))
    await _until(lambda: sb.replicate.stats()["running"] == 0)
    stats = sb.replicate.stats()
    assert stats["created"] == 1 and stats["canceled"] == 1, stats
    (attempt,) = [a for a in router.ledger.records() if a.provider == "replicate"]
    assert attempt.remote_ids == [sb.replicate.jobs()[0]["id"]]


async def test_fal_gateway_error_is_never_resubmitted_and_its_cost_is_unknown(sb: Sandbox) -> None:
    sb.fal.configure(fault="gateway_error")
    async with lc.Router([_fal(sb), _rep(sb)], retries=2) as router:
        result = await router.agenerate(_request(timeout_s=20))
    assert result.provider == "replicate"
    assert sb.fal.stats()["created"] == 1  # no second submit for the request
    (fal_attempt,) = [a for a in result.attempts if a.provider == "fal"]
    assert fal_attempt.outcome == "unknown" and fal_attempt.cost.usd is None and fal_attempt.cost.basis
    assert result.cost.usd is None and result.cost.known_usd > 0  # the total is unknown, never $0
    (summary,) = [s for s in router.ledger.summary() if s.provider == "fal"]
    assert (summary.unknown, summary.unknown_costs, summary.total_cost) == (1, 1, None)


async def test_identical_concurrent_requests_never_claim_each_others_prediction(sb: Sandbox) -> None:
    # Both creates are answered 502; each attempt adopts a different prediction of the two identical ones.
    sb.replicate.configure(fault="gateway_error", inference_s=0.3)
    async with _rep(sb) as gen:
        first, second = await asyncio.gather(gen.agenerate(_request()), gen.agenerate(_request()))
    assert sb.replicate.stats()["created"] == 2
    assert {first.request_id, second.request_id} == {j["id"] for j in sb.replicate.jobs()}
    await _until(lambda: sb.replicate.stats()["succeeded"] == 2)
    assert sb.replicate.stats()["canceled"] == 0


async def test_late_fal_submit_is_cancelled_and_reaches_the_ledger(sb: Sandbox) -> None:
    # fal's own time-to-start deadline is at least 1 s (X-Fal-Request-Timeout); the submit answers before it.
    sb.fal.configure(create_latency_s=0.5, queue_s=30)
    ledger = lc.Ledger()
    gen = _fal(sb)
    with ledger.observe():
        with pytest.raises(lc.GenerationTimeoutError) as info:
            await gen.agenerate(_request(timeout_s=0.3))
        assert info.value.outcome_unknown and info.value.attempt is not None
        assert info.value.attempt.outcome == "unknown" and info.value.attempt.cost.usd is None
        await _until(lambda: bool(ledger.records()[0].remote_ids))  # the submit answered late
        await gen.aclose()  # waits for the cancel of the late job
    (record,) = ledger.records()
    (job,) = sb.fal.jobs()
    assert record.remote_ids == [job["id"]]
    if job["status"] == "canceled":
        assert record.cost.usd == 0.0 and "not billed" in record.cost.basis
    else:  # a loaded machine let fal's own start deadline expire it first: the cancel came too late to tell
        assert job["status"] == "failed" and record.cost.usd is None
    assert record.outcome == "failed" and "created late" in (record.note or "")


async def test_fal_failed_result_after_completed_is_an_unknown_cost(sb: Sandbox) -> None:
    sb.fal.configure(fault="job_error")
    async with _fal(sb) as gen:
        with pytest.raises(lc.ProviderUnavailableError) as info:
            await gen.agenerate(_request())
    attempt = info.value.attempt
    assert attempt is not None and attempt.cost.usd is None and "could not be read" in attempt.cost.basis


async def test_fal_megapixel_price_without_billing_header_uses_the_image_size(sb: Sandbox) -> None:
    prices = DEFAULT_PRICES.model_copy(
        update={"fal_units": {"fal-ai/fast-lightning-sdxl": Price(usd=0.01, unit="megapixel", source="t", as_of="x")}}
    )
    gen = lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, rest_url="http://127.0.0.1:9", prices=prices)
    request = lc.GenerationRequest(prompt="x", width=1024, height=1024)
    async with gen:
        cost = await gen.pricing.cost(gen._http.get(), gen._key, None, 2, None, request=request)  # type: ignore[arg-type]
    assert cost.usd == pytest.approx(2 * 1024 * 1024 / 1e6 * 0.01) and cost.estimated


async def test_replicate_cancel_that_fails_leaves_an_unknown_cost(sb: Sandbox) -> None:
    sb.replicate.configure(inference_s=30)
    gen = _rep(sb, wait_s=0)
    with lc.Ledger().observe() as ledger:
        task = asyncio.ensure_future(gen.agenerate(_request()))
        await _until(lambda: bool(ledger.records() and ledger.records()[0].remote_ids))  # created and known
        sb.replicate.configure(error_status=500)  # the cancel fails: the prediction keeps running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    sb.replicate.configure(error_status=None)
    await gen.aclose()
    (record,) = ledger.records()
    assert record.outcome == "canceled" and record.cost.usd is None and "may run" in record.cost.basis


async def test_fal_request_that_expired_unseen_before_our_cancel_is_not_billed(sb: Sandbox) -> None:
    # fal's own start deadline (1.4 s) ends the queued request just before ours (1.5 s); we never saw
    # it end, so the cancel answers ALREADY_COMPLETED: the status then tells it never started.
    sb.fal.configure(queue_s=30)
    gen = _fal(sb, use_sse=False, poll_initial_s=5.0, poll_max_s=5.0)
    async with gen:
        with pytest.raises(lc.GenerationTimeoutError) as info:
            await gen.agenerate(_request(timeout_s=1.5))
    (job,) = sb.fal.jobs()
    assert job["status"] in ("failed", "canceled")
    attempt = info.value.attempt
    assert attempt is not None and (attempt.cost.usd, attempt.cost.estimated) == (0.0, False), attempt.cost
