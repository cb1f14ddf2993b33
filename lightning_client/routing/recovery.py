"""Recovery of paid jobs left behind by processes that died (`Router.recover()` / `arecover()`).

An orphan is an attempt row without an outcome whose process is gone (`Store.orphans`). Each
is claimed first (so two recovering processes never handle the same one), then its provider is
asked for every remote job id it recorded: finished jobs are collected (images saved when a
folder is given), failed ones recorded with their cost, ones still running cancelled unless
`wait`. An attempt whose create never answered has no id: it is resolved as the live path resolves
it (a provider that lists its jobs: a listed job with its input, created since it was sent), else it ends
"unknown" with an unknown cost. Nothing is ever created.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from lightning_client._log import get_logger
from lightning_client.errors import LightningError
from lightning_client.generator import Generator
from lightning_client.ledger import Ledger, attempt_from_row
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, Cost, GenerationResult, utcnow
from lightning_client.state.jobs import RecoveredJob

__all__ = ["Recovered", "Recovering", "arecover"]

logger = get_logger("lightning_client")


Action = Literal["collected", "failed", "canceled", "unknown"]


class Recovering(Protocol):
    """What recovery works on (a `Router`): the ledger holding the orphans and the generators that own them."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def generators(self) -> Sequence[Generator]: ...


class Recovered(BaseModel):
    """One orphaned attempt and what recovery did with it.

    `action`: "collected" (its images are in `result`, and in `paths` when saved), "failed"
    (the job failed; its cost is recorded), "canceled" (it still ran and was cancelled),
    "unknown" (no job id was recorded, or its provider cannot look jobs up).
    """

    attempt: Attempt
    action: Action
    result: GenerationResult | None = None
    paths: list[Path] = Field(default_factory=list)


def _request(row: dict[str, Any], attempt: Attempt) -> GenerationRequest:
    """The request the attempt served, as stored with its row (else what the row itself tells)."""
    stored = row.get("request")
    if stored:
        try:
            data = json.loads(stored)
            if data.get("aspect_ratio") is not None:
                data.pop("width", None)
                data.pop("height", None)
            return GenerationRequest.model_validate(data)
        except (ValueError, LightningError, ValidationError):
            logger.warning("recovery: the stored request of attempt %s is unreadable", attempt.attempt_id)
    fields: dict[str, Any] = {"prompt": "(recovered)"}
    if attempt.seed is not None:
        fields["seed"] = attempt.seed
    if attempt.steps in (1, 2, 4, 8):
        fields["steps"] = attempt.steps
    return GenerationRequest(**fields)


def _note(attempt: Attempt, note: str) -> None:
    attempt.note = note if not attempt.note else f"{attempt.note}; {note}"


def _finish(attempt: Attempt, jobs: Sequence[RecoveredJob]) -> tuple[Action, GenerationResult | None]:
    """Complete `attempt` from its jobs; the action and the combined result (when every job succeeded)."""
    attempt.ended_at = utcnow()
    cost: Cost | None = None
    for job in jobs:
        cost = job.cost if cost is None else cost + job.cost
    attempt.cost = cost or Cost()
    failed = next((j for j in jobs if j.status == "failed"), None)
    if failed is not None:
        error = failed.error
        attempt.outcome = "failed"
        attempt.error_type = None if error is None else type(error).__name__
        attempt.error_message = None if error is None else error.message
        attempt.status_code = None if error is None else error.status_code
        _note(attempt, "recovered after its process died: the job had failed")
        return "failed", None
    if any(j.status == "canceled" for j in jobs):
        attempt.outcome = "canceled"
        _note(attempt, "recovered after its process died: the job still ran and was cancelled")
        return "canceled", None
    results = [j.result for j in jobs if j.result is not None]
    result = results[0]
    for extra in results[1:]:
        result.images.extend(extra.images)
    result.cost = attempt.cost
    result.attempts = [attempt]
    attempt.outcome = "succeeded"
    attempt.num_images = len(result.images)
    attempt.seed = result.seed
    attempt.timings = result.timings.model_copy()
    _note(attempt, "recovered after its process died: the result was collected")
    return "collected", result


async def arecover(router: Recovering, folder: str | Path | None = None, *, wait: bool = False) -> list[Recovered]:
    """Recover every orphan of `router.ledger` whose provider is one of the router's generators."""
    ledger = router.ledger
    if not ledger.persistent:
        return []
    store = ledger.store
    await asyncio.to_thread(ledger.flush)
    generators = {g.name: g for g in router.generators}
    recovered: list[Recovered] = []
    for row in await asyncio.to_thread(store.orphans):
        generator = generators.get(row["provider"])
        if generator is None:
            continue  # left for a router that has this provider
        if not await asyncio.to_thread(store.claim, row["attempt_id"], row["owner"]):
            continue  # another process is recovering it, or it ended meanwhile
        attempt = attempt_from_row(row)
        request = _request(row, attempt)
        look_up = getattr(generator, "arecover_job", None)
        find = getattr(generator, "afind_jobs", None)
        if not attempt.remote_ids and look_up is not None and find is not None:
            # The process died before its create answered: find the job the way the live path does.
            taken = {rid for other in ledger.records(attempt.provider) for rid in other.remote_ids}
            try:
                attempt.remote_ids = list(await find(request, attempt.started_at.timestamp(), taken))
            except LightningError as exc:
                logger.warning("recovery of attempt %s: listing jobs failed: %s", attempt.attempt_id, exc)
                await asyncio.to_thread(store.claim_release, attempt.attempt_id)
                continue
            if attempt.remote_ids:
                attempt.request_id = attempt.remote_ids[0]
                _note(attempt, f"its create never answered; found job {attempt.request_id} by its input")
        if not attempt.remote_ids or look_up is None:
            attempt.outcome, attempt.ended_at = "unknown", utcnow()
            reason = "no job id was recorded" if not attempt.remote_ids else f"{generator.name} cannot look jobs up"
            attempt.cost = Cost.unknown(f"its process died and {reason}: a job may exist and be billed")
            _note(attempt, f"recovered after its process died: {reason}")
            ledger.record("end", attempt)
            recovered.append(Recovered(attempt=attempt, action="unknown"))
            continue
        jobs: list[RecoveredJob] = []
        try:
            for job_id in attempt.remote_ids:
                jobs.append(await look_up(job_id, request, wait=wait))
        except LightningError as exc:  # the provider could not tell: released for a later try
            logger.warning("recovery of attempt %s: %s", attempt.attempt_id, exc)
            await asyncio.to_thread(store.claim_release, attempt.attempt_id)
            continue
        action, result = _finish(attempt, jobs)
        paths: list[Path] = []
        if result is not None and folder is not None:
            paths = await asyncio.to_thread(result.save, folder, f"{attempt.provider}-{attempt.attempt_id[:12]}")
        ledger.record("end", attempt)
        recovered.append(Recovered(attempt=attempt.snapshot(), action=action, result=result, paths=paths))
    await asyncio.to_thread(ledger.flush)
    return recovered
