"""FalGenerator against the sandbox's fal emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox

KEY = "sandbox-key-id:sandbox-key-secret-0123"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.fal.reset()
    return sandbox


def make(sb: Sandbox, **kwargs: Any) -> lc.FalGenerator:
    return lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, rest_url=sb.fal_rest_url, **kwargs)


@pytest.fixture
async def gen(sb: Sandbox) -> AsyncIterator[lc.FalGenerator]:
    generator = make(sb)
    yield generator
    await generator.aclose()


def small(**fields: Any) -> lc.GenerationRequest:
    values: dict[str, Any] = {"prompt": "a red fox", "width": 512, "height": 512, "seed": 7, **fields}
    return lc.GenerationRequest(**values)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def settled(sb: Sandbox) -> bool:
    stats = sb.fal.stats()
    return bool(stats["running"] == 0 and stats["queued"] == 0)


def kinds(result: lc.GenerationResult) -> list[tuple[str, str]]:
    return [(w.kind, w.setting) for w in result.warnings]


# -- the happy path -------------------------------------------------------------------------------


async def test_done_when_one_512_image_with_seed_timings_cost_and_id(sb: Sandbox, gen: lc.FalGenerator) -> None:
    request = lc.GenerationRequest(prompt="a red fox", steps=4, width=512, height=512, seed=7)
    first = await gen.agenerate(request)
    second = await gen.agenerate(request)
    assert gen.name == "fal" and first.provider == "fal" and first.model == "fal-ai/fast-lightning-sdxl"
    assert len(first.images) == 1
    image = first.images[0]
    assert (image.width, image.height, image.content_type, image.nsfw) == (512, 512, "image/png", False)
    assert first.seed == 7
    assert first.timings.inference_s is not None and first.timings.inference_s > 0
    assert first.timings.queue_s is not None and first.timings.download_s is not None
    assert first.cost.usd > 0 and not first.cost.estimated
    assert first.cost.basis == "billable units 1 x $0.002/image (fal pricing API)"
    assert first.request_id and first.request_id != second.request_id
    assert first.warnings == []
    assert second.images[0].data == image.data
    requests = sb.fal.stats()["requests"]
    assert requests["stream"] == 2 and "status" not in requests  # the SSE stream, no polling
    assert requests["pricing"] == 1  # looked up once, then cached
    (job, _) = sb.fal.jobs()
    assert job["input"]["image_size"] == "square" and job["input"]["num_inference_steps"] == "4"


async def test_payload_maps_fields_and_provider_options_win(sb: Sandbox, gen: lc.FalGenerator) -> None:
    request = small(
        width=768,
        steps=2,
        output_format="jpeg",
        safety_checker=False,
        provider_options={"fal": {"expand_prompt": True}},
    )
    result = await gen.agenerate(request)
    (job,) = sb.fal.jobs()
    sent = job["input"]
    assert sent["image_size"] == {"width": 768, "height": 512}
    assert (sent["num_inference_steps"], sent["num_images"], sent["seed"]) == ("2", 1, 7)
    assert (sent["enable_safety_checker"], sent["format"], sent["expand_prompt"]) == (False, "jpeg", True)
    image = result.images[0]
    assert (image.width, image.height, image.content_type) == (768, 512, "image/jpeg")
    assert result.warnings == []


async def test_three_images(gen: lc.FalGenerator) -> None:
    result = await gen.agenerate(small(num_images=3, width=256, height=256))
    assert len(result.images) == 3 and len({i.data for i in result.images}) == 3
    assert result.cost.usd == pytest.approx(3 * 0.002)


async def test_unsupported_settings_warn_and_are_not_sent(sb: Sandbox, gen: lc.FalGenerator) -> None:
    result = await gen.agenerate(small(negative_prompt="blurry", guidance_scale=2.0, output_format="webp"))
    assert sorted(kinds(result)) == [
        ("converted", "output_format"),
        ("unsupported", "guidance_scale"),
        ("unsupported", "negative_prompt"),
    ]
    sent = sb.fal.jobs()[0]["input"]
    assert "negative_prompt" not in sent and "guidance_scale" not in sent and sent["format"] == "png"
    assert result.images[0].content_type == "image/webp" and result.images[0].data[8:12] == b"WEBP"


async def test_polling_when_sse_is_off(sb: Sandbox) -> None:
    sb.fal.configure(inference_s=0.3, queue_s=0.2)
    async with make(sb, use_sse=False) as gen:
        result = await gen.agenerate(small())
    requests = sb.fal.stats()["requests"]
    assert "stream" not in requests and 3 <= requests["status"] <= 12, requests
    # Seen by polling, IN_PROGRESS is noticed at the next poll after it starts.
    assert result.timings.queue_s is not None and 0.15 <= result.timings.queue_s <= 0.7
    assert result.timings.inference_s == pytest.approx(0.3, abs=0.1)


async def test_sse_delivers_the_result_milliseconds_after_completion(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(inference_s=0.3)
    lags = []
    for seed in range(3):  # the best of three, so a busy CI machine does not decide the outcome
        result = await gen.agenerate(small(width=256, height=256, seed=seed))
        returned = time.time()
        (job,) = [j for j in sb.fal.jobs() if j["id"] == result.request_id]
        lags.append(returned - job["completed_at"] - (result.timings.download_s or 0.0))
    assert min(lags) < 0.05, f"{min(lags) * 1e3:.0f} ms from completion to result (downloads excluded)"


def _client_ports(url: str) -> set[int]:
    """Local ports of this process's TCP connections to the server at `url`."""
    import psutil

    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port}


async def test_status_stream_connection_is_reused(sb: Sandbox) -> None:
    # The stream is read to its end after COMPLETED (the server closes it then), so its connection goes
    # back to the pool instead of being dropped and every later request needing a new one.
    sb.fal.configure(inference_s=0.0)
    async with make(sb, max_connections=8) as gen:  # one pool: every request may use the same connection
        await gen.agenerate(small(width=256, height=256, seed=0))
        first = _client_ports(sb.fal_url)
        for seed in range(1, 5):
            await gen.agenerate(small(width=256, height=256, seed=seed))
            assert _client_ports(sb.fal_url) <= first
    assert sb.fal.stats()["requests"]["stream"] == 5


async def test_run_mode_uses_the_sync_endpoint(sb: Sandbox) -> None:
    async with make(sb, mode="run", run_url=sb.fal_run_url) as gen:
        result = await gen.agenerate(small())
    requests = sb.fal.stats()["requests"]
    assert requests["run"] == 1 and "submit" not in requests
    assert result.request_id == sb.fal.jobs()[0]["id"] and result.cost.usd > 0


async def test_pricing_unreachable_falls_back_to_the_price_table(sb: Sandbox) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, rest_url=closed) as gen:
        result = await gen.agenerate(small())
    assert result.cost.usd == pytest.approx(0.002) and result.cost.estimated
    assert "price table" in result.cost.basis


def test_sync_generate_and_close(sb: Sandbox) -> None:
    with make(sb) as gen:
        first = gen.generate(small(width=256, height=256))
        second = gen.generate(small(width=256, height=256, seed=8))
    assert first.images[0].data != second.images[0].data


# -- validation and credentials -----------------------------------------------------------------


async def test_missing_key_names_the_variables_and_sends_nothing(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    async with lc.FalGenerator(base_url=sb.fal_url, rest_url=sb.fal_rest_url) as gen:
        with pytest.raises(lc.AuthenticationError, match="FAL_KEY_ID and FAL_KEY_SECRET") as info:
            await gen.agenerate(small())
    assert info.value.provider == "fal" and "FAL_KEY" in info.value.message
    assert sb.fal.stats()["requests"] == {}


async def test_wrong_key_is_an_authentication_error(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(valid_tokens=["other:key"])
    with pytest.raises(lc.AuthenticationError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable, err.request_id) == ("fal", 401, False, None)
    assert "No user found" in err.message


async def test_503_to_a_submit_created_nothing_and_is_sent_again_in_place(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(error_status=503)  # "Could not schedule a runner": nothing is queued
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.retryable, err.outcome_unknown) == ("fal", 503, True, False)
    assert err.attempt is not None and err.attempt.outcome == "failed" and err.attempt.cost.usd == 0.0
    assert sb.fal.stats()["requests"]["submit"] == 1 + gen.create_retry_limit
    assert "sent again 4 time(s)" in (err.attempt.note or "")


async def test_invalid_input_surfaces_at_result_as_invalid_request(sb: Sandbox, gen: lc.FalGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        await gen.agenerate(small(provider_options={"fal": {"safety_checker_version": "v9"}}))
    err = info.value
    assert (err.status_code, err.field, err.retryable) == (422, "safety_checker_version", False)
    assert err.request_id == sb.fal.jobs()[0]["id"]


async def test_no_secret_in_debug_logs_reprs_or_errors(
    sb: Sandbox, gen: lc.FalGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await gen.agenerate(small())
    sb.fal.configure(valid_tokens=["other:key"])
    with pytest.raises(lc.AuthenticationError) as info:
        await gen.agenerate(small())
    assert "lightning_client.providers" in caplog.text and "POST" in caplog.text
    secret = KEY.split(":")[1]
    for text in (
        caplog.text,
        repr(gen),
        str(gen.__dict__),
        str(info.value),
        repr(info.value),
        str(info.value.to_dict()),
    ):
        assert secret not in text


# -- deadlines and abandonment ----------------------------------------------------------------------


async def test_deadline_cancels_the_request_remotely(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(inference_s=5)
    started = time.monotonic()
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small(timeout_s=1))
    assert time.monotonic() - started < 2
    stats = sb.fal.stats()
    assert (stats["canceled"], stats["running"], stats["queued"]) == (1, 0, 0)
    err = info.value
    assert err.provider == "fal" and err.retryable and err.request_id == sb.fal.jobs()[0]["id"]
    assert err.attempt is not None and err.attempt.cost.estimated and err.attempt.cost.usd > 0
    assert err.attempt.cost.basis.startswith("abandoned: ")


async def test_cancelled_while_queued_costs_nothing(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(queue_s=5)
    # The cancel, and the status read that settles a race with fal's own deadline, may take their time
    # on a loaded machine: a cancel that could not be confirmed is (rightly) priced as possibly billed.
    gen.cancel_timeout_s = 30
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small(timeout_s=1))
    # Our cancel and fal's own time-to-start deadline (X-Fal-Request-Timeout, sent equal to our
    # remaining time) fire together: either one ends the queued request, never started, unbilled.
    await wait_for(lambda: sb.fal.stats()["canceled"] + sb.fal.stats()["failed"] == 1)
    assert sb.fal.stats()["queued"] == sb.fal.stats()["running"] == sb.fal.stats()["succeeded"] == 0
    assert info.value.attempt is not None
    assert (info.value.attempt.cost.usd, info.value.attempt.cost.estimated) == (0.0, False)


@pytest.mark.parametrize("when", ["created", "running"])
async def test_cancelling_the_task_cancels_remotely(sb: Sandbox, gen: lc.FalGenerator, when: str) -> None:
    # "created": most often while the submit's answer is still on its way, so the id is not known yet.
    sb.fal.configure(inference_s=5)
    task = asyncio.ensure_future(gen.agenerate(small()))
    await wait_for(lambda: sb.fal.stats()[when] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: sb.fal.stats()["canceled"] == 1, timeout=2)
    assert sb.fal.stats()["running"] == 0


# -- sandbox faults ---------------------------------------------------------------------------------


async def test_fault_reset_is_outcome_unknown(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="reset")
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", None, None, True)
    assert err.outcome_unknown and "not re-sent" in err.message
    assert sb.fal.stats()["created"] == 1 and sb.fal.stats()["requests"]["submit"] == 1


async def test_fault_hang_with_deadline_is_outcome_unknown(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="hang")
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await gen.agenerate(small(timeout_s=0.5))
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", None, None, True)
    assert err.outcome_unknown


async def test_fault_hang_without_deadline_times_out_the_read(sb: Sandbox) -> None:
    sb.fal.configure(fault="hang")
    async with make(sb, timeout=0.4) as gen:
        with pytest.raises(lc.ProviderUnavailableError) as info:
            await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", None, None, True)
    assert err.outcome_unknown and "ReadTimeout" in err.message


async def test_fault_malformed_json_recovers_the_id_and_cancels(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="malformed_json", inference_s=2)
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small())
    err = info.value
    (job,) = sb.fal.jobs()
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", 200, job["id"], True)
    assert not err.outcome_unknown and "not valid JSON" in err.message
    assert job["status"] == "canceled"


async def test_fault_truncated_image(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="truncated_image")
    with pytest.raises(lc.ProviderResponseError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", None, sb.fal.jobs()[0]["id"], True)
    assert "cannot be decoded" in err.message
    assert err.attempt is not None and err.attempt.cost.usd > 0  # billed: the job itself succeeded


async def test_fault_job_error(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="job_error")
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", 500, sb.fal.jobs()[0]["id"], True)
    assert "runner_server_error" in err.message or "model raised an error" in err.message


async def test_fault_completed_with_error(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="completed_with_error")
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await gen.agenerate(small())
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("fal", None, sb.fal.jobs()[0]["id"], True)
    assert "runner_disconnected" in err.message
    assert sb.fal.stats()["requests"].get("result") is None  # the status said it all


async def test_fault_nsfw_is_content_filtered(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="nsfw")
    with pytest.raises(lc.ContentFilteredError) as info:
        await gen.agenerate(small(num_images=2, width=256, height=256))
    err = info.value
    assert (err.provider, err.status_code, err.request_id, err.retryable) == (
        "fal",
        None,
        sb.fal.jobs()[0]["id"],
        False,
    )
    assert "has_nsfw_concepts" in err.message


async def test_fault_nsfw_with_the_checker_off_is_not_applied(sb: Sandbox, gen: lc.FalGenerator) -> None:
    sb.fal.configure(fault="nsfw")
    result = await gen.agenerate(small(safety_checker=False))
    assert result.images[0].nsfw is False and result.warnings == []
