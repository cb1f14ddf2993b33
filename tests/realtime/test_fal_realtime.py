"""FalGenerator realtime sessions on the sandbox's realtime WebSocket, over real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import lightning_client as lc
from lightning_client.realtime import RealtimeResult, RealtimeSessionLike, backend_for
from lightning_client.testing import Sandbox
from lightning_client.testing.sandbox import ProviderHandle
from tests.realtime.conftest import Until

KEY = "sandbox-key-id:sandbox-key-secret-0123"


@pytest.fixture
async def gen(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> AsyncIterator[lc.FalGenerator]:
    generator = lc.FalGenerator(
        api_key=KEY,
        base_url=lightning_sandbox.fal_url,
        run_url=lightning_sandbox.fal_run_url,
        rest_url=lightning_sandbox.fal_rest_url,
    )
    yield generator
    await generator.aclose()


async def collect(session: RealtimeSessionLike) -> list[RealtimeResult]:
    await session.finish()
    return [result async for result in session]


SMALL = {"steps": 2, "width": 512, "height": 512, "output_format": "jpeg"}


async def test_twenty_sends_latest_wins_none_superseded_billed(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle, lightning_sandbox: Sandbox
) -> None:
    fal_sandbox.configure(inference_s=0.2)
    ledger = lc.Ledger()
    async with gen.realtime(throttle_s=0.1, ledger=ledger) as session:
        assert session.transport == "websocket"
        for i in range(20):
            await session.send(f"a red fox, take {i}", seed=7, **SMALL)
            await asyncio.sleep(0.03)
        results = await collect(session)
    stats = session.stats()
    assert results[-1].prompt == "a red fox, take 19"
    assert [r.send_id for r in results] == sorted(r.send_id for r in results)
    assert stats.sends == 20 and stats.served == len(results) <= 10
    assert stats.superseded == 20 - stats.sent and stats.cancelled == 0
    # Superseded sends never reached fal: fal saw exactly the jobs sent, each billed once in the ledger.
    jobs = {job["id"]: job for job in fal_sandbox.jobs()}
    assert len(jobs) == stats.sent == fal_sandbox.stats()["created"]
    assert {r.request_id for r in results} <= set(jobs)
    records = ledger.records()
    assert len(records) == stats.sent and all(a.outcome == "succeeded" and a.provider == "fal" for a in records)
    assert {a.request_id for a in records} == set(jobs)
    assert all(a.cost.usd > 0 and "billable units" in a.cost.basis for a in records)
    assert all(
        r.transport == "websocket" and not r.emulated and r.images[0].content_type == "image/jpeg" for r in results
    )
    assert all(r.latency_s >= (r.timings.inference_s or 0) for r in results)


async def test_result_is_the_requested_image(gen: lc.FalGenerator) -> None:
    async with gen.realtime(throttle_s=0) as session:
        send_id = await session.send("a lighthouse", steps=4, width=768, height=1024, seed=11, output_format="png")
        [result] = await collect(session)
    assert result.send_id == send_id and result.seed == 11 and result.steps == 4
    assert result.images[0].to_pil().size == (768, 1024) and result.images[0].content_type == "image/png"


async def test_idle_timeout_reconnects(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle, lightning_sandbox: Sandbox, until: Until
) -> None:
    lightning_sandbox.fal_realtime.configure(idle_timeout_s=0.2)
    async with gen.realtime(throttle_s=0) as session:
        await session.send("first", **SMALL)
        first = await session.__anext__()
        await until(lambda: lightning_sandbox.fal_realtime.stats().get("timeouts", 0) > 0)
        await session.send("second", **SMALL)
        second = await session.__anext__()
    assert (first.prompt, second.prompt) == ("first", "second")
    stats = lightning_sandbox.fal_realtime.stats()
    assert stats["connections"] == 2 and stats["timeouts"] >= 1 and stats.get("refused", 0) == 0


async def test_token_refreshed_before_expiry(gen: lc.FalGenerator, lightning_sandbox: Sandbox) -> None:
    realtime = lightning_sandbox.fal_realtime
    realtime.configure(token_ttl_cap_s=0.6, idle_timeout_s=0.1)
    async with gen.realtime(throttle_s=0) as session:
        await session.send("before", **SMALL)
        await session.__anext__()
        await asyncio.sleep(0.9)  # the first token has expired on the sandbox; the socket idled out
        await session.send("after", **SMALL)
        after = await session.__anext__()
    assert after.prompt == "after"
    stats = realtime.stats()
    # Refreshed in the background at 90% of the token's life: no socket was ever refused.
    assert stats["tokens"] >= 2 and stats.get("refused", 0) == 0 and stats["connections"] == 2


async def test_x_fal_error_maps_to_taxonomy_and_session_goes_on(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle
) -> None:
    fal_sandbox.configure(fault="job_error")
    async with gen.realtime(throttle_s=0) as session:
        await session.send("fails", **SMALL)
        with pytest.raises(lc.ProviderUnavailableError) as caught:
            await session.__anext__()
        assert caught.value.provider == "fal" and "INTERNAL_ERROR" in caught.value.message
        fal_sandbox.configure(fault=None)
        await session.send("works", **SMALL)
        assert (await session.__anext__()).prompt == "works"
    assert session.stats().failed == 1


async def test_refused_socket_falls_back_to_queue_with_warning(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle, lightning_sandbox: Sandbox
) -> None:
    lightning_sandbox.fal_realtime.configure(refuse=True)
    async with gen.realtime(throttle_s=0) as session:
        assert session.transport == "queue"
        await session.send("via the queue", **SMALL)
        [result] = await collect(session)
    assert result.transport == "queue" and result.emulated
    warning = next(w for w in result.warnings if w.setting == "realtime")
    assert warning.kind == "emulated" and "HTTP 403" in warning.message
    assert result.request_id in {job["id"] for job in fal_sandbox.jobs()}
    assert fal_sandbox.stats()["requests"].get("submit") == 1


async def test_bad_key_is_authentication_error(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(valid_tokens=["right:key"])
    gen = lc.FalGenerator(
        api_key="wrong:key",
        base_url=lightning_sandbox.fal_url,
        run_url=lightning_sandbox.fal_run_url,
        rest_url=lightning_sandbox.fal_rest_url,
    )
    with pytest.raises(lc.AuthenticationError):
        async with gen.realtime():
            pass
    await gen.aclose()


async def test_invalid_send_raises_before_anything_is_sent(gen: lc.FalGenerator, fal_sandbox: ProviderHandle) -> None:
    async with gen.realtime() as session:
        with pytest.raises(lc.InvalidRequestError) as caught:
            await session.send("x", steps=3)
        assert caught.value.field == "steps"
        with pytest.raises(lc.InvalidRequestError):
            await session.send("x", width=4096, height=4096)
    assert session.stats().sends == 0 and fal_sandbox.stats()["created"] == 0


async def test_results_carry_the_generators_name(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    async with (
        lc.FalGenerator(
            api_key=KEY,
            base_url=lightning_sandbox.fal_url,
            run_url=lightning_sandbox.fal_run_url,
            rest_url=lightning_sandbox.fal_rest_url,
            name="fal-eu",
        ) as gen,
        gen.realtime(throttle_s=0) as session,
    ):
        await session.send("named", **SMALL)
        result = await session.__anext__()
        fal_sandbox.configure(fault="job_error")
        await session.send("fails", **SMALL)
        with pytest.raises(lc.ProviderUnavailableError) as caught:
            await session.__anext__()
    assert result.provider == "fal-eu" and result.attempts[0].provider == "fal-eu"
    assert caught.value.provider == "fal-eu"


async def test_closing_with_a_job_on_the_socket_records_it_canceled_with_its_cost(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle, until: Until
) -> None:
    fal_sandbox.configure(inference_s=1.0)
    ledger = lc.Ledger()
    async with gen.realtime(throttle_s=0, ledger=ledger) as session:
        await session.send("left running", **SMALL)
        await until(lambda: fal_sandbox.stats()["running"] == 1)
    [attempt] = ledger.records()
    # fal runs it anyway (a socket cannot cancel): canceled for us, but billed, so priced (estimated).
    assert attempt.outcome == "canceled" and attempt.cost.usd > 0 and attempt.cost.estimated
    assert "abandoned on the socket" in attempt.cost.basis
    assert session.stats().cancelled == 1 and session.stats().served == 0


async def test_session_over_the_https_sandbox_uses_wss(
    lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in lightning_sandbox_tls.env().items():
        monkeypatch.setenv(name, value)
    sb = lightning_sandbox_tls
    async with (
        lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url) as gen,
        gen.realtime(throttle_s=0) as session,
    ):
        assert session.transport == "websocket"
        await session.send("over tls", **SMALL)
        result = await session.__anext__()
    assert result.prompt == "over tls" and result.transport == "websocket"


async def test_a_frame_of_an_abandoned_input_never_answers_the_next_one(
    gen: lc.FalGenerator, fal_sandbox: ProviderHandle, until: Until
) -> None:
    fal_sandbox.configure(inference_s=0.5)
    backend = backend_for(gen)
    await backend.start()
    try:
        abandoned = asyncio.ensure_future(backend.run(lc.GenerationRequest(prompt="abandoned", **SMALL)))
        await until(lambda: fal_sandbox.stats()["running"] == 1)
        abandoned.cancel()
        fal_sandbox.configure(inference_s=0.05)
        result = await backend.run(lc.GenerationRequest(prompt="next", **SMALL))
    finally:
        await backend.aclose()
    # Both inputs went over the same socket; the first one's frame came first and was dropped.
    assert result.prompt == "next" and fal_sandbox.stats()["created"] == 2
    assert result.request_id == fal_sandbox.jobs()[1]["id"]
