"""Router against the sandbox with the real Replicate and fal generators."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_fixed

import lightning_client as lc
from lightning_client.result import Attempt
from lightning_client.routing import BreakerConfig, DeadlineExceededError, HedgeConfig, Hooks
from lightning_client.testing import Sandbox

SMALL: dict[str, Any] = {"width": 256, "height": 256}


class DroppingServer:
    """A loopback TCP server that reads each request and resets the connection without answering.

    Every request's outcome is unknown to the client, including the look-up a generator
    makes to find out whether its create went through.
    """

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    head = conn.recv(65536)
                except OSError:
                    continue
                self.requests.append(head.split(b"\r\n", 1)[0])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def count(self, prefix: bytes) -> int:
        return sum(line.startswith(prefix) for line in self.requests)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@pytest.fixture
def dropping_server() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def state(router: lc.Router, provider: str) -> str:
    return router.breakers[provider].state


def created(sb: Sandbox) -> tuple[int, int]:
    return sb.replicate.stats()["created"], sb.fal.stats()["created"]


def test_serves_from_the_first_provider_or_the_one_asked_for(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([rep, fal])
    assert isinstance(router, lc.Generator) and router.name == "router"
    first = router.generate("a lighthouse", **SMALL)
    assert first.provider == "replicate" and len(first.images) == 1
    assert [(a.provider, a.outcome) for a in first.attempts] == [("replicate", "succeeded")]
    assert first.timings.total_s is not None and first.timings.total_s >= first.attempts[0].timings.total_s  # type: ignore[operator]
    second = router.generate(lc.GenerationRequest(prompt="a lighthouse", **SMALL), providers=["fal"])
    assert second.provider == "fal" and [a.provider for a in second.attempts] == ["fal"]
    assert created(sb) == (1, 1)
    assert [a.request_id for a in router.ledger.records()] == [first.request_id, second.request_id]


def test_503_fails_over_and_the_first_attempt_carries_the_error(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(error_status=503)
    router = lc.Router([rep, fal])
    for _ in range(3):
        result = router.generate("a lighthouse", **SMALL)
        assert result.provider == "fal"
        failed = result.attempts[0]
        # A 503 to a create means nothing was created: sent again in place, then failed over.
        assert (failed.provider, failed.outcome, failed.error_type, failed.status_code) == (
            "replicate",
            "failed",
            "ProviderUnavailableError",
            503,
        )
        assert failed.cost.usd == 0.0
        assert result.attempts[1].provider == "fal" and result.attempts[1].succeeded
    rows = {row.provider: row for row in router.ledger.summary()}
    assert set(rows) == {"replicate", "fal"}
    assert rows["replicate"].success_rate is not None and rows["replicate"].success_rate < 0.5
    assert rows["fal"].success_rate == 1.0 and rows["fal"].images == 3
    assert rows["fal"].cost_per_image == pytest.approx(0.002)


def test_zero_budget_blocks_before_anything_is_sent(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([rep, fal], budget_usd=0.0)
    with pytest.raises(lc.BudgetExceededError, match="budget"):
        router.generate("a lighthouse", **SMALL)
    assert created(sb) == (0, 0)
    assert sb.replicate.stats()["requests"] == {} and len(router.ledger) == 0


def test_budget_compares_expected_cost_of_all_images(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([fal, rep], budget_usd=0.005)
    assert router.expected_cost(lc.GenerationRequest(prompt="x", num_images=4), "fal") == pytest.approx(0.008)
    with pytest.raises(lc.BudgetExceededError, match=r"expected cost \$0.0080"):
        router.generate("a lighthouse", num_images=4, **SMALL)
    assert created(sb) == (0, 0)
    router.generate("a lighthouse", **SMALL)  # $0.002 fits; it is then spent
    assert router.budget.spent_usd == pytest.approx(0.002)


def test_both_failing_lists_every_attempt(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    # 409s: retryable, and (unlike 5xx) known not to have created a job, so they are retried.
    sb.replicate.configure(error_status=409)
    sb.fal.configure(error_status=409)
    router = lc.Router([rep, fal], retries=1, backoff=wait_fixed(0.01))
    with pytest.raises(lc.AllProvidersFailedError) as caught:
        router.generate("a lighthouse", **SMALL)
    err = caught.value
    assert [(a.provider, a.outcome) for a in err.attempts] == [
        ("replicate", "failed"),
        ("fal", "failed"),
        ("replicate", "failed"),
        ("fal", "failed"),
    ]
    assert "replicate: ProviderUnavailableError" in str(err) and "fal: ProviderUnavailableError" in str(err)
    assert len(err.errors) == 4 and err.retryable
    assert isinstance(err.__cause__, lc.ProviderUnavailableError)
    assert len(router.ledger) == 4


async def test_100_concurrent_requests_after_sync_use(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([rep, fal])
    assert (await asyncio.to_thread(router.generate, "warm up", **SMALL)).provider == "replicate"
    results = await asyncio.gather(*(router.agenerate(f"cat {i}", **SMALL) for i in range(100)))
    assert all(r.provider == "replicate" and len(r.images) == 1 for r in results)
    assert sb.replicate.stats()["succeeded"] == 101
    assert len(router.ledger) == 101 and state(router, "replicate") == "closed"
    await router.aclose()


def test_breaker_opens_skips_then_half_open_probe_recovers(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(error_status=503)
    router = lc.Router([rep, fal], breaker=BreakerConfig(failure_threshold=2, cooldown_s=0.5))
    for _ in range(2):
        assert router.generate("x", **SMALL).provider == "fal"
    assert state(router, "replicate") == "open"
    requests_before = sb.replicate.stats()["requests"].get("create", 0)
    skipped = router.generate("x", **SMALL)
    assert skipped.provider == "fal"
    assert skipped.attempts[0].outcome == "skipped" and "circuit breaker open" in (skipped.attempts[0].note or "")
    assert sb.replicate.stats()["requests"].get("create", 0) == requests_before  # nothing sent while open
    assert router.ledger.summary()[0].skipped == 1

    sb.replicate.configure(error_status=None)
    time.sleep(0.5)
    assert state(router, "replicate") == "half-open"
    recovered = router.generate("x", **SMALL)
    assert recovered.provider == "replicate"
    assert state(router, "replicate") == "closed"


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` until it holds (background cancellations finish a few ms after the winner returns)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_hedge_starts_the_next_provider_and_cancels_the_loser_remotely(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(inference_s=5.0)
    router = lc.Router([rep, fal], hedge=0.3)
    started = time.monotonic()
    result = router.generate("x", **SMALL)
    assert time.monotonic() - started < 2.0
    assert result.provider == "fal"
    loser, winner = result.attempts
    assert (loser.provider, loser.outcome, loser.hedge) == ("replicate", "canceled", False)
    assert loser.note == "cancelled: another provider won"
    assert (winner.provider, winner.outcome, winner.hedge) == ("fal", "succeeded", True)
    eventually(lambda: sb.replicate.stats()["canceled"] == 1)

    def loser_recorded() -> bool:
        return {a.provider: a.outcome for a in router.ledger.records()} == {"replicate": "canceled", "fal": "succeeded"}

    eventually(loser_recorded)
    recorded = {a.provider: a for a in router.ledger.records()}
    # the create was still waiting (Prefer: wait) when cancelled; the generator found the job and cancelled it
    cancelled_jobs = {job["id"] for job in sb.replicate.jobs() if job["status"] == "canceled"}
    assert recorded["replicate"].request_id in cancelled_jobs
    assert recorded["replicate"].cost.usd > 0 and "predict_time" in recorded["replicate"].cost.basis
    assert router.ledger.summary()[0].canceled == 1


def test_hedge_can_wait_for_the_loser_so_the_result_carries_its_cost(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(inference_s=5.0)
    router = lc.Router([rep, fal], hedge=HedgeConfig(delay_s=0.3, cancel_wait_s=5.0))
    result = router.generate("x", **SMALL)
    assert sb.replicate.stats()["canceled"] == 1  # cancelled before the result came back
    loser, winner = result.attempts
    assert loser.cost.usd > 0
    assert result.cost.usd == pytest.approx(loser.cost.usd + winner.cost.usd)


async def test_aclose_waits_for_losers_to_cancel(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    sb.replicate.configure(inference_s=5.0)
    router = lc.Router([rep, fal], hedge=0.3)
    assert (await router.agenerate("x", **SMALL)).provider == "fal"
    await router.aclose()
    assert sb.replicate.stats()["canceled"] == 1
    assert [a.outcome for a in router.ledger.records()] == ["canceled", "succeeded"]


def test_no_hedge_when_the_primary_is_fast(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    router = lc.Router([rep, fal], hedge="p90")
    assert router.hedge is not None and router.hedge.percentile == 90
    assert router.generate("x", **SMALL).provider == "replicate"
    assert created(sb) == (1, 0)


def test_capability_skips_are_recorded_with_reasons(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    router = lc.Router([rep, fal])
    result = router.generate("x", steps=2, allow_emulation=False, **SMALL)
    assert result.provider == "fal"
    skipped = result.attempts[0]
    assert (skipped.provider, skipped.outcome) == ("replicate", "skipped")
    assert "steps=2 only emulated" in (skipped.note or "")
    assert created(sb) == (0, 1)
    assert [a.outcome for a in router.ledger.records()] == ["skipped", "succeeded"]


def test_none_can_serve_says_why_for_each(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    router = lc.Router([rep, fal])
    with pytest.raises(lc.InvalidRequestError) as caught:
        router.generate("x", width=4096, height=256)
    message = str(caught.value)
    assert "replicate: width=4096 outside 256..1280" in message and "fal: width=4096 outside 256..2048" in message
    assert caught.value.field == "width"
    assert created(sb) == (0, 0)


def test_rate_limit_longer_than_the_deadline_fails_over_and_benches(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(error_status=429)  # ratelimit-reset: 30 s
    router = lc.Router([rep, fal])
    started = time.monotonic()
    result = router.generate("x", timeout_s=10, **SMALL)
    assert time.monotonic() - started < 3.0  # no 30 s sleep
    limited = result.attempts[0]
    assert (limited.provider, limited.error_type) == ("replicate", "RateLimitError")
    assert "beyond the" in (limited.note or "") and result.provider == "fal"
    # benched for the advertised time: the next request skips replicate without sending
    again = router.generate("x", **SMALL)
    assert again.attempts[0].outcome == "skipped" and "rate limited for another" in (again.attempts[0].note or "")
    assert sb.replicate.stats()["requests"]["create"] == 1


def test_outcome_unknown_is_not_resent_to_the_same_provider(
    sb: Sandbox, fal: lc.FalGenerator, dropping_server: DroppingServer
) -> None:
    rep = lc.ReplicateGenerator(api_key="r8_test", base_url=dropping_server.url)
    alone = lc.Router([rep], retries=3, backoff=wait_fixed(0.01))
    with pytest.raises(lc.AllProvidersFailedError) as caught:
        alone.generate("x", **SMALL)
    (attempt,) = caught.value.attempts
    assert "not re-sent" in (attempt.note or "") and attempt.error_type == "ProviderUnavailableError"
    assert dropping_server.count(b"POST /v1/predictions") == 1

    both = lc.Router([rep, fal], retries=3, backoff=wait_fixed(0.01))
    result = both.generate("x", **SMALL)
    assert result.provider == "fal" and dropping_server.count(b"POST /v1/predictions") == 2
    rep.close()


def test_fal_submit_reset_is_not_resent_and_fails_over(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.fal.configure(fault="reset")  # fal cannot list requests: the submit's outcome stays unknown
    router = lc.Router([fal, rep], retries=2, backoff=wait_fixed(0.01))
    result = router.generate("x", **SMALL)
    assert result.provider == "replicate"
    assert result.attempts[0].provider == "fal" and "not re-sent" in (result.attempts[0].note or "")
    assert sb.fal.stats()["requests"]["submit"] == 1


def test_a_reset_create_whose_job_was_found_is_adopted_not_resent(sb: Sandbox, rep: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(fault="reset")
    router = lc.Router([rep], retries=1, backoff=wait_fixed(0.01))
    result = router.generate("x", **SMALL)
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    stats = sb.replicate.stats()
    assert stats["created"] == 1 and stats["succeeded"] == 1  # one prediction, found and used: paid once


def test_422_is_raised_without_failover(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    sb.replicate.configure(error_status=422)
    router = lc.Router([rep, fal])
    with pytest.raises(lc.InvalidRequestError) as caught:
        router.generate("x", **SMALL)
    assert caught.value.status_code == 422 and caught.value.provider == "replicate"
    assert caught.value.attempt is not None and caught.value.attempt.outcome == "failed"
    assert created(sb)[1] == 0 and sb.fal.stats()["requests"] == {}
    assert state(router, "replicate") == "closed"


def test_auth_error_skips_that_provider(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    sb.replicate.configure(valid_tokens=["r8_someone_else"])
    router = lc.Router([rep, fal], retries=2, backoff=wait_fixed(0.01))
    result = router.generate("x", **SMALL)
    assert result.provider == "fal"
    assert result.attempts[0].error_type == "AuthenticationError"
    assert "authentication failed" in (result.attempts[0].note or "")
    assert sb.replicate.stats()["requests"]["create"] == 1


def test_retryable_failure_is_retried_after_backoff(sb: Sandbox, rep: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(error_status=409)

    def heal(attempt: Attempt) -> None:
        sb.replicate.configure(error_status=None)

    router = lc.Router([rep], retries=2, backoff=wait_fixed(0.2), hooks=[Hooks(on_end=heal)])
    started = time.monotonic()
    result = router.generate("x", **SMALL)
    assert time.monotonic() - started >= 0.2
    assert [a.outcome for a in result.attempts] == ["failed", "succeeded"]
    assert result.provider == "replicate" and sb.replicate.stats()["requests"]["create"] == 2


def test_deadline_covers_all_attempts_and_cancels_remotely(sb: Sandbox, rep: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(inference_s=10.0)
    router = lc.Router([rep])
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as caught:
        router.generate("x", timeout_s=1.0, **SMALL)
    assert time.monotonic() - started < 2.5
    assert isinstance(caught.value, lc.GenerationTimeoutError)
    assert isinstance(caught.value, lc.AllProvidersFailedError) and len(caught.value.attempts) == 1
    assert sb.replicate.stats()["canceled"] == 1


def test_unknown_provider_name_is_rejected(rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    router = lc.Router([rep, fal])
    with pytest.raises(lc.InvalidRequestError, match="choose from: replicate, fal") as caught:
        router.generate("x", providers=["dalle"])
    assert caught.value.field == "providers"


def test_constructor_validation(rep: lc.ReplicateGenerator) -> None:
    with pytest.raises(ValueError, match="at least one generator"):
        lc.Router([])
    with pytest.raises(ValueError, match="repeated: replicate"):
        lc.Router([rep, rep])
    with pytest.raises(ValueError, match="hedge="):
        lc.Router([rep], hedge="soon")


def test_capabilities_are_the_union(rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    caps = lc.Router([rep, fal]).capabilities
    assert caps.native_steps == frozenset({1, 2, 4, 8}) and caps.emulated_steps == frozenset()
    assert caps.max_side == 2048 and caps.min_side == 256
    assert caps.formats == frozenset({"png", "jpeg"}) and "webp" in caps.converted_formats
    assert caps.negative_prompt


def test_fastest_and_cheapest_policies_learn_from_the_sandbox(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(inference_s=0.6)
    fastest = lc.Router([rep, fal], policy="fastest")
    for provider in ("replicate", "fal", "replicate", "fal"):
        fastest.generate("x", providers=[provider], **SMALL)
    assert fastest.generate("x", **SMALL).provider == "fal"
    # replicate bills 0.6 s x $0.000975/s = $0.0006 per image, below fal's $0.002
    cheapest = lc.Router([fal, rep], policy="cheapest")
    assert cheapest.generate("x", **SMALL).provider == "replicate"


def test_sqlite_ledger_survives_reopen_and_seeds_a_new_router(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator, tmp_path: Path
) -> None:
    path = tmp_path / "attempts.db"
    sb.replicate.configure(error_status=409)
    with lc.Ledger(path) as ledger:
        router = lc.Router([rep, fal], ledger=ledger)
        result = router.generate("x", **SMALL)
    reopened = lc.Ledger.open(path)
    assert [a.attempt_id for a in reopened.records()] == [a.attempt_id for a in result.attempts]
    assert reopened.records()[1].cost == result.attempts[1].cost
    assert reopened.open_jobs() == []
    # the spend recorded in the file counts against a new router's budget
    capped = lc.Router([rep, fal], ledger=reopened, budget_usd=result.cost.usd)
    with pytest.raises(lc.BudgetExceededError):
        capped.generate("x", **SMALL)
    reopened.close()


def test_ledger_observes_a_generator_without_a_router(sb: Sandbox, fal: lc.FalGenerator) -> None:
    ledger = lc.Ledger()
    with ledger.observe():
        result = fal.generate("x", **SMALL)
    (record,) = ledger.records()
    assert record.request_id == result.request_id and record.outcome == "succeeded"
    assert record.timings.inference_s is not None and record.cost.usd == pytest.approx(0.002)


def test_refused_connection_fails_over_and_breaker_false_never_opens(sb: Sandbox, fal: lc.FalGenerator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    dead = lc.ReplicateGenerator(api_key="r8_test", base_url=closed)
    router = lc.Router([dead, fal], breaker=False, retries=0)
    for _ in range(6):
        result = router.generate("x", **SMALL)
        assert result.provider == "fal"
        assert result.attempts[0].error_type == "ProviderUnavailableError"
    assert state(router, "replicate") == "closed"
    dead.close()


def test_weighted_policy_follows_the_weights(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    router = lc.Router([rep, fal], policy="weighted", weights={"replicate": 0.0, "fal": 1.0})
    assert {router.generate("x", **SMALL).provider for _ in range(3)} == {"fal"}
    assert created(sb) == (0, 3)


def test_a_tiny_timeout_still_sends_the_first_attempt(sb: Sandbox, rep: lc.ReplicateGenerator) -> None:
    sb.replicate.configure(inference_s=2.0)
    router = lc.Router([rep])
    with pytest.raises(DeadlineExceededError) as caught:
        router.generate("x", timeout_s=0.05, **SMALL)
    (attempt,) = caught.value.attempts
    assert attempt.error_type == "GenerationTimeoutError"
    eventually(lambda: sb.replicate.stats()["created"] == sb.replicate.stats()["canceled"] == 1)


def test_a_timeout_that_used_the_deadline_does_not_start_another_provider(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(inference_s=10.0)
    router = lc.Router([rep, fal], breaker=False)
    with pytest.raises(DeadlineExceededError) as caught:
        router.generate("x", timeout_s=1.0, **SMALL)
    assert [a.provider for a in caught.value.attempts] == ["replicate"]
    assert sb.fal.stats()["requests"] == {}
