"""ReplicateGenerator against the sandbox's Replicate emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.generator import observe_attempts
from lightning_client.pricing import PriceTable
from lightning_client.result import Attempt
from lightning_client.testing import Sandbox

TOKEN = "r8_sandbox_token_0123456789"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.replicate.reset()
    return sandbox


@pytest.fixture
async def gen(sb: Sandbox) -> AsyncIterator[lc.ReplicateGenerator]:
    generator = lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url)
    yield generator
    await generator.aclose()


def small(**fields: Any) -> lc.GenerationRequest:
    values: dict[str, Any] = {"prompt": "a red fox", "width": 256, "height": 256, "seed": 7, **fields}
    return lc.GenerationRequest(**values)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def settled(sb: Sandbox) -> bool:
    stats = sb.replicate.stats()
    return bool(stats["running"] == 0 and stats["queued"] == 0)


# -- the happy path -------------------------------------------------------------------------------


async def test_cost_is_exact_once_the_hardware_is_confirmed(sb: Sandbox) -> None:
    prices = PriceTable(
        replicate_model_hardware={"bytedance/sdxl-lightning-4step": "gpu-a100-large"},
        replicate_hardware_confirmed=frozenset({"bytedance/sdxl-lightning-4step"}),
    )
    async with lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url, prices=prices) as gen:
        result = await gen.agenerate(small())
    assert result.cost.estimated is False and "gpu-a100-large" in result.cost.basis
    assert result.cost.usd > 0


async def test_done_when_one_512_image_with_seed_timings_cost_and_id(gen: lc.ReplicateGenerator) -> None:
    request = lc.GenerationRequest(prompt="a red fox", steps=4, width=512, height=512, seed=7)
    first = await gen.agenerate(request)
    second = await gen.agenerate(request)
    assert gen.name == "replicate" and first.provider == "replicate"
    assert len(first.images) == 1
    image = first.images[0]
    assert (image.width, image.height, image.content_type) == (512, 512, "image/png")
    assert first.seed == 7
    assert first.timings.inference_s is not None and first.timings.inference_s > 0
    assert first.timings.queue_s is not None and first.timings.download_s is not None
    assert first.timings.total_s is not None and first.timings.total_s >= first.timings.inference_s
    assert first.cost.usd > 0 and first.cost.estimated  # the model's hardware is an assumption
    assert first.cost.basis.startswith("predict_time ") and "gpu-l40s" in first.cost.basis
    assert first.request_id and first.request_id != second.request_id
    assert first.warnings == []
    assert second.images[0].data == image.data


async def test_payload_maps_every_field_and_provider_options_win(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    request = small(
        steps=2,
        negative_prompt="blurry",
        guidance_scale=1.5,
        safety_checker=False,
        provider_options={"replicate": {"scheduler": "DDIM"}},
    )
    result = await gen.agenerate(request)
    (job,) = sb.replicate.jobs()
    assert job["input"] == {
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "width": 256,
        "height": 256,
        "num_outputs": 1,
        "num_inference_steps": 2,
        "guidance_scale": 1.5,
        "seed": 7,
        "scheduler": "DDIM",
        "disable_safety_checker": True,
    }
    assert [(w.kind, w.setting) for w in result.warnings] == [("emulated", "steps")]


async def test_six_images_are_split_over_two_concurrent_predictions(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(inference_s=0.3)
    result = await gen.agenerate(small(num_images=6))
    assert len(result.images) == 6
    jobs = sb.replicate.jobs()
    assert sorted((j["input"]["num_outputs"], j["input"]["seed"]) for j in jobs) == [(2, 8), (4, 7)]
    assert max(j["started_at"] for j in jobs) < min(j["completed_at"] for j in jobs), "they ran one after the other"
    assert len({img.data for img in result.images}) == 6
    assert sorted(result.attempts[0].remote_ids) == sorted(j["id"] for j in jobs)
    assert result.cost.basis.count("predict_time") == 2
    assert ("emulated", "num_images") in [(w.kind, w.setting) for w in result.warnings]


async def test_polling_path_without_prefer_wait(sb: Sandbox) -> None:
    sb.replicate.configure(inference_s=0.3, queue_s=0.2)
    async with lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url, wait_s=0) as gen:
        result = await gen.agenerate(small())
    assert len(result.images) == 1
    requests = sb.replicate.stats()["requests"]
    assert 3 <= requests["get"] <= 12, requests  # adaptive: fast at first, then backing off
    assert result.timings.queue_s is not None and result.timings.queue_s == pytest.approx(0.2, abs=0.1)
    assert result.timings.inference_s == pytest.approx(0.3, abs=0.1)


async def test_converted_format_and_official_model_route(sb: Sandbox) -> None:
    async with lc.ReplicateGenerator(
        api_key=TOKEN, base_url=sb.replicate_url, model="bytedance/sdxl-lightning-4step"
    ) as gen:
        result = await gen.agenerate(small(output_format="jpeg"))
    assert result.images[0].content_type == "image/jpeg" and result.images[0].data[:3] == b"\xff\xd8\xff"
    assert ("converted", "output_format") in [(w.kind, w.setting) for w in result.warnings]


async def test_provider_options_never_override_a_validated_field(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    result = await gen.agenerate(small(provider_options={"replicate": {"seed": 99, "num_outputs": 4, "width": 1024}}))
    (job,) = sb.replicate.jobs()
    assert (job["input"]["seed"], job["input"]["num_outputs"], job["input"]["width"]) == (7, 1, 256)
    assert result.seed == 7 and len(result.images) == 1
    assert sorted(w.setting for w in result.warnings if w.kind == "ignored") == [
        "provider_options.replicate.num_outputs",
        "provider_options.replicate.seed",
        "provider_options.replicate.width",
    ]


async def test_cancel_after_only_for_deadlines_of_at_least_5_s(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    long = await gen.agenerate(small(timeout_s=30))
    short = await gen.agenerate(small(timeout_s=3))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        predictions = [
            (await client.get(f"{sb.replicate_url}/v1/predictions/{result.request_id}")).json()
            for result in (long, short)
        ]
    assert predictions[0].get("deadline") is not None
    assert predictions[1].get("deadline") is None


def test_sync_generate_and_close(sb: Sandbox) -> None:
    with lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url) as gen:
        first = gen.generate(small())
        second = gen.generate(small(seed=8))
    assert first.images[0].data != second.images[0].data
    assert sb.replicate.stats()["succeeded"] == 2


# -- validation and credentials -----------------------------------------------------------------


async def test_unsupported_size_is_refused_before_sending(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError, match="1280") as info:
        await gen.agenerate(small(width=1536))
    assert info.value.field == "width"
    assert sb.replicate.stats()["requests"] == {}


async def test_missing_token_names_the_variable_and_sends_nothing(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    async with lc.ReplicateGenerator(base_url=sb.replicate_url) as gen:
        with pytest.raises(lc.AuthenticationError, match="REPLICATE_API_TOKEN") as info:
            await gen.agenerate(small())
    assert info.value.provider == "replicate"
    assert sb.replicate.stats()["requests"] == {}


async def test_wrong_token_is_an_authentication_error(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(valid_tokens=["r8_the_right_one"])
    with pytest.raises(lc.AuthenticationError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable, err.request_id) == ("replicate", 401, False, None)
    assert "valid authentication token" in err.message
    assert sb.replicate.stats()["created"] == 0


async def test_503_to_a_create_created_nothing_and_is_sent_again_in_place(
    sb: Sandbox, gen: lc.ReplicateGenerator
) -> None:
    sb.replicate.configure(error_status=503)  # the service did not take the prediction
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable, err.outcome_unknown) == ("replicate", 503, True, False)
    assert err.attempt is not None and err.attempt.outcome == "failed"
    assert err.attempt.cost.usd == 0.0 and "nothing was created" in err.attempt.cost.basis
    assert sb.replicate.stats()["requests"]["create"] == 1 + gen.create_retry_limit


async def test_500_to_a_create_is_not_sent_again_unless_the_prediction_is_provably_absent(
    sb: Sandbox, gen: lc.ReplicateGenerator
) -> None:
    sb.replicate.configure(error_status=500)  # every create and every list fails: nothing proves absence
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.status_code, err.outcome_unknown) == (500, True)
    assert err.attempt is not None and err.attempt.outcome == "unknown" and err.attempt.cost.usd is None
    assert sb.replicate.stats()["requests"]["create"] == 1


async def test_429_is_a_rate_limit_error_with_retry_after(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(error_status=429)
    with pytest.raises(lc.RateLimitError) as info:
        await gen.agenerate(small())
    assert (info.value.status_code, info.value.retryable, info.value.retry_after) == (429, True, 30.0)


async def test_422_names_the_invalid_field(gen: lc.ReplicateGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        await gen.agenerate(small(provider_options={"replicate": {"scheduler": "NOPE"}}))
    assert (info.value.status_code, info.value.field, info.value.retryable) == (422, "scheduler", False)


async def test_no_secret_in_debug_logs_reprs_or_errors(
    sb: Sandbox, gen: lc.ReplicateGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await gen.agenerate(small())
    sb.replicate.configure(valid_tokens=["r8_other"])
    with pytest.raises(lc.AuthenticationError) as info:
        await gen.agenerate(small())
    assert "lightning_client.providers" in caplog.text and "POST" in caplog.text
    for text in (
        caplog.text,
        repr(gen),
        str(gen.__dict__),
        str(info.value),
        repr(info.value),
        str(info.value.to_dict()),
    ):
        assert TOKEN not in text


# -- deadlines and abandonment ----------------------------------------------------------------------


async def test_deadline_cancels_the_prediction_remotely(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(inference_s=5)
    started = time.monotonic()
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small(timeout_s=0.5))
    assert time.monotonic() - started < 1.5
    stats = sb.replicate.stats()
    assert (stats["canceled"], stats["running"], stats["queued"]) == (1, 0, 0)
    err = info.value
    assert err.provider == "replicate" and err.retryable and err.request_id == sb.replicate.jobs()[0]["id"]
    assert err.attempt is not None and err.attempt.cost.usd > 0 and "predict_time" in err.attempt.cost.basis


async def test_deadline_during_prefer_wait_then_polling(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(inference_s=5)
    with pytest.raises(lc.GenerationTimeoutError):
        await gen.agenerate(small(timeout_s=2.5))
    stats = sb.replicate.stats()
    assert (stats["canceled"], stats["running"]) == (1, 0)
    assert stats["requests"]["get"] >= 1  # sync wait ended (wait=1), then polling until the deadline


async def test_cancelling_the_task_while_polling_cancels_remotely(sb: Sandbox) -> None:
    sb.replicate.configure(inference_s=5)
    events: list[tuple[str, Attempt]] = []
    async with lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url, wait_s=0) as gen:
        with observe_attempts(lambda event, attempt: events.append((event, attempt.model_copy()))):
            task = asyncio.ensure_future(gen.agenerate(small()))
            await wait_for(lambda: sb.replicate.stats()["running"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert (sb.replicate.stats()["canceled"], sb.replicate.stats()["running"]) == (1, 0)
    assert [e for e, _ in events] == ["start", "job", "end"]
    assert events[-1][1].outcome == "canceled" and events[-1][1].cost.usd > 0


async def test_cancelling_the_task_during_prefer_wait_finds_and_cancels_the_job(
    sb: Sandbox, gen: lc.ReplicateGenerator
) -> None:
    sb.replicate.configure(inference_s=5)
    task = asyncio.ensure_future(gen.agenerate(small()))
    await wait_for(lambda: sb.replicate.stats()["running"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = sb.replicate.stats()
    assert (stats["canceled"], stats["running"], stats["requests"]["list"]) == (1, 0, 1)


# -- sandbox faults ---------------------------------------------------------------------------------


async def test_fault_reset_is_outcome_unknown_then_the_prediction_is_adopted(
    sb: Sandbox, gen: lc.ReplicateGenerator
) -> None:
    sb.replicate.configure(fault="reset", inference_s=0.5)
    result = await gen.agenerate(small())
    # The create's outcome was unknown; the prediction was found by its input and serves the request.
    (job,) = sb.replicate.jobs()
    assert result.request_id == job["id"] and job["status"] == "succeeded"
    assert result.attempts[0].remote_ids == [job["id"]] and result.attempts[0].cost.usd
    assert sb.replicate.stats()["created"] == 1


async def test_fault_hang_with_deadline(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="hang", inference_s=5)
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small(timeout_s=0.6))
    err = info.value
    (job,) = sb.replicate.jobs()
    assert (err.provider, err.status_code, err.retryable) == ("replicate", None, True)
    assert err.request_id == job["id"] and not err.outcome_unknown
    await wait_for(lambda: settled(sb))
    assert sb.replicate.stats()["canceled"] == 1


async def test_fault_hang_without_deadline_times_out_the_read_then_adopts(sb: Sandbox) -> None:
    sb.replicate.configure(fault="hang", inference_s=1)
    async with lc.ReplicateGenerator(api_key=TOKEN, base_url=sb.replicate_url, wait_s=0, timeout=0.5) as gen:
        result = await gen.agenerate(small())
    (job,) = sb.replicate.jobs()
    assert result.request_id == job["id"] and sb.replicate.stats()["created"] == 1
    await wait_for(lambda: settled(sb))


async def test_fault_malformed_json_recovers_the_id_and_cancels(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="malformed_json", inference_s=2)
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small())
    err = info.value
    (job,) = sb.replicate.jobs()
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("replicate", 201, job["id"], True)
    assert "not valid JSON" in err.message and not err.outcome_unknown
    assert job["status"] == "canceled"


async def test_fault_truncated_image(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="truncated_image")
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small())
    err = info.value
    (job,) = sb.replicate.jobs()
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("replicate", None, job["id"], True)
    assert "cannot be decoded" in err.message
    assert err.attempt is not None and err.attempt.cost.usd > 0  # it ran and is billed


async def test_fault_job_error(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="job_error")
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small())
    err = info.value
    (job,) = sb.replicate.jobs()
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("replicate", None, job["id"], True)
    assert "CUDA error" in err.message
    assert err.attempt is not None and err.attempt.cost.usd > 0


async def test_fault_nsfw_fails_a_single_image(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="nsfw")
    with pytest.raises(lc.ContentFilteredError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable) == ("replicate", None, False)
    assert err.request_id == sb.replicate.jobs()[0]["id"]


async def test_fault_nsfw_drops_some_of_several_images_with_a_warning(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="nsfw")
    result = await gen.agenerate(small(num_images=3))
    assert len(result.images) == 1
    assert ("ignored", "num_images") in [(w.kind, w.setting) for w in result.warnings]


async def test_fault_aborted_costs_nothing(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="aborted")
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable) == ("replicate", None, True)
    assert err.request_id == sb.replicate.jobs()[0]["id"]
    assert err.attempt is not None
    assert (err.attempt.cost.usd, err.attempt.cost.estimated) == (0.0, False)
    assert "aborted" in err.attempt.cost.basis


async def test_data_removed_outputs(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(retention_s=0)
    with pytest.raises(lc.ProviderResponseError, match="data_removed") as info:
        await gen.agenerate(small())
    assert info.value.request_id == sb.replicate.jobs()[0]["id"] and info.value.retryable


async def test_one_failed_split_prediction_cancels_its_sibling(sb: Sandbox, gen: lc.ReplicateGenerator) -> None:
    # One worker: the first prediction runs and fails while the second waits in the queue.
    sb.replicate.configure(fault="job_error", workers=1, inference_s=0.3)
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small(num_images=5))
    await wait_for(lambda: settled(sb))
    jobs = {j["status"]: j["id"] for j in sb.replicate.jobs()}
    assert sorted(jobs) == ["canceled", "failed"]
    assert info.value.request_id == jobs["failed"]
    assert info.value.attempt is not None and sorted(info.value.attempt.remote_ids) == sorted(jobs.values())
