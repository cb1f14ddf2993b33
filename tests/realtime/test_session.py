"""Session rules on emulated backends: create-and-cancel on Replicate, the router's session, the sync wrapper."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import lightning_client as lc
from lightning_client.realtime import RealtimeSession, RouterBackend
from lightning_client.routing.breaker import BreakerConfig
from lightning_client.testing import Sandbox
from lightning_client.testing.sandbox import ProviderHandle
from tests.realtime.conftest import Until

TOKEN = "r8_sandbox"
KEY = "sandbox-key-id:sandbox-key-secret-0123"
SMALL = {"steps": 4, "width": 512, "height": 512, "output_format": "jpeg"}


@pytest.fixture
async def replicate(
    lightning_sandbox: Sandbox, replicate_sandbox: ProviderHandle
) -> AsyncIterator[lc.ReplicateGenerator]:
    generator = lc.ReplicateGenerator(api_key=TOKEN, base_url=lightning_sandbox.replicate_url)
    yield generator
    await generator.aclose()


def fal_for(sb: Sandbox) -> lc.FalGenerator:
    return lc.FalGenerator(api_key=KEY, base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url)


async def test_replicate_superseded_running_job_is_cancelled_remotely(
    replicate: lc.ReplicateGenerator, replicate_sandbox: ProviderHandle, until: Until
) -> None:
    replicate_sandbox.configure(inference_s=2.0)
    ledger = lc.Ledger()
    async with replicate.realtime(throttle_s=0, ledger=ledger) as session:
        assert session.transport == "create-and-cancel"
        first = await session.send("slow first", **SMALL)
        await until(lambda: replicate_sandbox.stats()["running"] > 0)
        replicate_sandbox.configure(inference_s=0.05)
        second = await session.send("quick second", **SMALL)
        await session.finish()
        results = [r async for r in session]
    assert [r.send_id for r in results] == [second] and first == second - 1
    assert results[0].emulated and any(w.kind == "emulated" and w.setting == "realtime" for w in results[0].warnings)
    stats = session.stats()
    assert (stats.sent, stats.cancelled, stats.served, stats.superseded) == (2, 1, 1, 0)
    outcomes = sorted(a.outcome or "" for a in ledger.records())
    assert outcomes == ["canceled", "succeeded"]
    # The cancel reached Replicate: the superseded prediction ended canceled there, not succeeded.
    await replicate.aclose()
    assert replicate_sandbox.stats()["canceled"] == 1


async def test_pending_send_is_replaced_never_sent(
    replicate: lc.ReplicateGenerator, replicate_sandbox: ProviderHandle
) -> None:
    async with replicate.realtime(throttle_s=1.0) as session:
        await session.send("a", **SMALL)
        first = await session.__anext__()
        for word in ("ab", "abc", "abcd"):  # all within the throttle window after the first job
            await session.send(word, **SMALL)
        await session.finish()
        rest = [r async for r in session]
    assert [r.prompt for r in (first, *rest)] == ["a", "abcd"]
    assert session.stats().superseded == 2 and replicate_sandbox.stats()["created"] == 2


async def test_router_session_moves_to_next_generator_on_session_failure(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, replicate_sandbox: ProviderHandle
) -> None:
    fal_sandbox.configure(error_status=503)  # the token route fails: fal cannot open a session
    router = lc.Router(
        [fal_for(lightning_sandbox), lc.ReplicateGenerator(api_key=TOKEN, base_url=lightning_sandbox.replicate_url)]
    )
    async with router, router.realtime(throttle_s=0) as session:
        assert isinstance(session, RealtimeSession) and isinstance(session.backend, RouterBackend)
        assert session.provider == "replicate"
        await session.send("routed", **SMALL)
        await session.finish()
        [result] = [r async for r in session]
    assert result.provider == "replicate" and result.transport == "create-and-cancel"
    assert [a.provider for a in router.ledger.records()] == ["replicate"]


async def test_router_session_fails_over_mid_session(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, replicate_sandbox: ProviderHandle
) -> None:
    router = lc.Router(
        [fal_for(lightning_sandbox), lc.ReplicateGenerator(api_key=TOKEN, base_url=lightning_sandbox.replicate_url)],
        breaker=BreakerConfig(failure_threshold=1, cooldown_s=60),
    )
    async with router, router.realtime(throttle_s=0) as session:
        assert session.provider == "fal" and session.transport == "websocket"
        await session.send("on fal", **SMALL)
        first = await session.__anext__()
        fal_sandbox.configure(fault="job_error")  # INTERNAL_ERROR: fal's session failed
        await session.send("moved on", **SMALL)
        second = await session.__anext__()
    assert (first.provider, second.provider) == ("fal", "replicate") and second.prompt == "moved on"
    outcomes = [(a.provider, a.outcome) for a in router.ledger.records()]
    assert outcomes == [("fal", "succeeded"), ("fal", "failed"), ("replicate", "succeeded")]
    assert router.breakers["fal"].state == "open"  # failure_threshold=1: the session failure counted


def test_sync_wrapper(lightning_sandbox: Sandbox, replicate_sandbox: ProviderHandle) -> None:
    with lc.ReplicateGenerator(api_key=TOKEN, base_url=lightning_sandbox.replicate_url) as gen:
        with gen.realtime(throttle_s=0) as session:
            send_id = session.send("from a script", **SMALL)
            session.finish()
            results = list(session)
        assert [r.send_id for r in results] == [send_id] and session.stats().served == 1


def test_throttle_must_be_non_negative(replicate: lc.ReplicateGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError) as caught:
        replicate.realtime(throttle_s=-1)
    assert caught.value.field == "throttle_s"


async def test_send_before_start_and_after_close(replicate: lc.ReplicateGenerator) -> None:
    session = replicate.realtime()
    assert isinstance(session, RealtimeSession)
    with pytest.raises(RuntimeError, match="start the session"):
        await session.send("too early")
    async with session:
        pass
    with pytest.raises(RuntimeError, match="no longer takes sends"):
        await session.send("too late")
    assert [r async for r in session] == []


async def test_router_session_passes_over_an_open_breaker(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, replicate_sandbox: ProviderHandle
) -> None:
    router = lc.Router(
        [fal_for(lightning_sandbox), lc.ReplicateGenerator(api_key=TOKEN, base_url=lightning_sandbox.replicate_url)]
    )
    for _ in range(20):
        router.breakers["fal"].record_failure()
    assert router.breakers["fal"].state == "open"
    async with router, router.realtime(throttle_s=0) as session:
        assert session.provider == "replicate"
    assert fal_sandbox.stats()["requests"] == {}
