"""Every sandbox fault kind on both providers, through the generator and through the router.

The expected behaviours are the rows of `lightning_client.testing.fault_matrix`, the same data
that renders the table in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.generator import BaseGenerator
from lightning_client.routing import DeadlineExceededError
from lightning_client.testing._behaviour import FAL_FAULTS, REPLICATE_FAULTS
from lightning_client.testing.fault_matrix import FAULT_MATRIX, FaultExpectation, render_markdown, update_document
from lightning_client.testing.sandbox import ProviderHandle, Sandbox

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
#: Seconds past a deadline that a failure may take to arrive (clean-up, a busy 2-core machine).
SLACK_S = 2.0
ROW_IDS = [f"{row.provider}-{row.fault}" for row in FAULT_MATRIX]


def _generator(sb: Sandbox, provider: str, fault: str = "") -> BaseGenerator:
    if provider == "replicate":
        # Sync mode answers the create once the prediction is done; flaky status reads need polling.
        wait_s = 0 if fault == "flaky_status" else 60
        return lc.ReplicateGenerator(api_key="r8_matrix_token", base_url=sb.replicate_url, wait_s=wait_s)
    return lc.FalGenerator(api_key="matrix:key", base_url=sb.fal_url)


def _handle(sb: Sandbox, provider: str) -> ProviderHandle:
    handle = sb.replicate if provider == "replicate" else sb.fal
    handle.reset()
    return handle


def _request(row: FaultExpectation) -> lc.GenerationRequest:
    # A hang holds the create until the deadline, so its deadline is short.
    return lc.GenerationRequest(
        prompt="a lighthouse", width=256, height=256, seed=3, timeout_s=1.5 if row.router == "deadline" else 8.0
    )


async def _settled(handle: ProviderHandle, timeout_s: float = 3.0) -> dict[str, int]:
    """Stats once nothing is queued or running (jobs here take 50 ms; cancels are immediate)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = handle.stats()
        if (stats["running"] == 0 and stats["queued"] == 0) or time.monotonic() > deadline:
            return {k: v for k, v in stats.items() if k != "requests"}
        await asyncio.sleep(0.02)


def _sent(attempts: list[lc.Attempt]) -> list[lc.Attempt]:
    return [a for a in attempts if a.outcome != "skipped"]


def test_matrix_covers_every_fault_kind_of_both_providers() -> None:
    rows = {(row.provider, row.fault) for row in FAULT_MATRIX}
    expected = {("replicate", k) for k in REPLICATE_FAULTS} | {("fal", k) for k in FAL_FAULTS}
    assert rows == expected
    assert len(FAULT_MATRIX) == len(rows)


def test_docs_table_is_generated_from_the_matrix() -> None:
    text = DOC.read_text()
    assert render_markdown() in text
    assert update_document(text) == text, (
        "docs/reliability.md is stale: run python -m lightning_client.testing.fault_matrix docs/reliability.md"
    )


FAILING = [row for row in FAULT_MATRIX if row.error is not None]
RECOVERED = [row for row in FAULT_MATRIX if row.error is None]


@pytest.mark.parametrize("row", RECOVERED, ids=[f"{row.provider}-{row.fault}" for row in RECOVERED])
async def test_generator_recovers_in_place(row: FaultExpectation, lightning_sandbox: Sandbox) -> None:
    handle = _handle(lightning_sandbox, row.provider)
    handle.configure(fault=row.fault)
    generator = _generator(lightning_sandbox, row.provider, row.fault)
    try:
        result = await generator.agenerate(_request(row))
    finally:
        await generator.aclose()
    assert result.provider == row.provider and len(result.images) == 1
    (attempt,) = result.attempts
    assert attempt.outcome == "succeeded" and attempt.cost.usd
    if row.fault.startswith("flaky_"):
        assert attempt.read_retries >= 1  # read again in place
    stats = await _settled(handle)
    assert stats["created"] == 1 and stats["succeeded"] == 1, stats  # exactly one job for the request


@pytest.mark.parametrize("row", FAILING, ids=[f"{row.provider}-{row.fault}" for row in FAILING])
async def test_generator_raises_the_expected_error(row: FaultExpectation, lightning_sandbox: Sandbox) -> None:
    handle = _handle(lightning_sandbox, row.provider)
    handle.configure(fault=row.fault)
    generator = _generator(lightning_sandbox, row.provider, row.fault)
    started = time.monotonic()
    try:
        with pytest.raises(lc.LightningError) as caught:
            await generator.agenerate(_request(row))
        elapsed = time.monotonic() - started
    finally:
        await generator.aclose()
    error = caught.value
    assert type(error) is row.error, f"{type(error).__name__}: {error}"
    assert error.provider == row.provider
    assert error.retryable is row.retryable
    assert error.outcome_unknown is row.outcome_unknown
    # A known job is always named in the error; an unknown outcome has no id to name.
    assert (error.request_id is None) is row.outcome_unknown
    assert error.attempt is not None
    assert error.attempt.outcome == ("unknown" if row.outcome_unknown else "failed")
    assert error.attempt.error_type == row.error.__name__  # type: ignore[union-attr]
    if row.outcome_unknown:
        assert error.attempt.cost.usd is None  # a job may run unseen: its cost is unknown, never $0
    # Within the deadline plus the bounded clean-up (a found job is cancelled), with room for a loaded machine.
    assert elapsed < _request(row).timeout_s + SLACK_S  # type: ignore[operator]

    stats = await _settled(handle)
    assert stats["created"] == 1, stats
    assert stats["running"] == 0 and stats["queued"] == 0, stats
    if row.remote_job == "cancelled":
        assert stats["canceled"] == 1, stats
    elif row.remote_job in ("completed", "unknown"):
        assert stats["succeeded"] == 1 and stats["canceled"] == 0, stats
    else:
        assert stats["succeeded"] == 0 and stats["canceled"] == 0, stats
        assert stats["failed"] + stats["aborted"] == 1, stats


@pytest.mark.parametrize("row", FAULT_MATRIX, ids=ROW_IDS)
async def test_router_alone_retries_only_what_is_retried(row: FaultExpectation, lightning_sandbox: Sandbox) -> None:
    handle = _handle(lightning_sandbox, row.provider)
    handle.configure(fault=row.fault)
    router = lc.Router([_generator(lightning_sandbox, row.provider, row.fault)], retries=1, breaker=False)
    try:
        if row.error is None:
            result = await router.agenerate(_request(row))
        else:
            with pytest.raises(lc.AllProvidersFailedError) as caught:
                await router.agenerate(_request(row))
    finally:
        await router.aclose()
    if row.error is None:
        assert [a.outcome for a in result.attempts] == ["succeeded"]
        assert (await _settled(handle))["created"] == 1
        return
    error = caught.value
    assert isinstance(error, DeadlineExceededError) is (row.router == "deadline")
    sent = _sent(error.attempts)
    assert len(sent) == (2 if row.retried else 1), [a.error_type for a in sent]
    assert all(a.error_type == row.error.__name__ for a in sent)
    assert all(a.outcome == ("unknown" if row.outcome_unknown else "failed") for a in sent)
    assert len(_sent(router.ledger.records())) == len(sent)
    stats = await _settled(handle)
    assert stats["created"] == len(sent), stats  # never a second job for one attempt
    assert stats["running"] == 0


@pytest.mark.parametrize("row", FAULT_MATRIX, ids=ROW_IDS)
async def test_router_fails_over_to_the_healthy_provider(row: FaultExpectation, lightning_sandbox: Sandbox) -> None:
    faulty = _handle(lightning_sandbox, row.provider)
    other = "fal" if row.provider == "replicate" else "replicate"
    healthy = _handle(lightning_sandbox, other)
    faulty.configure(fault=row.fault)
    # A hang holds the first attempt until the deadline: only hedging reaches the healthy provider.
    hedge = 0.2 if row.router == "deadline" else None
    router = lc.Router(
        [_generator(lightning_sandbox, row.provider, row.fault), _generator(lightning_sandbox, other)],
        hedge=hedge,
        breaker=False,
    )
    try:
        result = await router.agenerate(_request(row))
    finally:
        await router.aclose()
    if row.error is None:  # recovered in place: served by the faulty provider, the other never sent to
        assert result.provider == row.provider
        assert [a.provider for a in _sent(result.attempts)] == [row.provider]
        assert (await _settled(healthy))["created"] == 0
        return
    assert result.provider == other
    assert len(result.images) == 1
    first = result.attempts[0]
    assert first.provider == row.provider
    assert first.error_type == row.error.__name__ or (row.router == "deadline" and first.outcome == "canceled")
    sent = _sent(result.attempts)
    assert [a.provider for a in sent] == [row.provider, other]
    assert (await _settled(faulty))["created"] == 1
    assert (await _settled(healthy))["created"] == 1


async def test_hang_without_hedging_ends_at_the_deadline(lightning_sandbox: Sandbox) -> None:
    faulty = _handle(lightning_sandbox, "fal")
    _handle(lightning_sandbox, "replicate")
    faulty.configure(fault="hang")
    router = lc.Router(
        [_generator(lightning_sandbox, "fal"), _generator(lightning_sandbox, "replicate")], breaker=False
    )
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError) as caught:
            await router.agenerate(lc.GenerationRequest(prompt="x", width=256, height=256, timeout_s=1.0))
        elapsed = time.monotonic() - started
    finally:
        await router.aclose()  # gives the unanswered submit a few seconds to answer, so its job is cancelled
    assert elapsed < 1.0 + SLACK_S
    assert [a.error_type for a in _sent(caught.value.attempts)] == ["GenerationTimeoutError"]
