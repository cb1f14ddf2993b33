"""Run batch items through a router with a manifest, so interrupted runs resume without repeating work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lightning_client._log import mask_secrets
from lightning_client.batching.items import BatchItem, file_stem
from lightning_client.batching.manifest import Manifest, ManifestEntry
from lightning_client.batching.pool import run_pool
from lightning_client.errors import LightningError
from lightning_client.report.rows import ResultRow, rows_for_error, rows_for_result
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult

__all__ = ["BatchSummary", "Routes", "run_batch"]

MANIFEST = "manifest.jsonl"


class Routes(Protocol):
    """What the batch needs from a router: generate, optionally restricted to some providers."""

    async def agenerate(
        self, request: GenerationRequest, *, providers: Sequence[str] | None = None
    ) -> GenerationResult: ...


@dataclass
class BatchSummary:
    """Counts for one run; `skipped` items were already done in an earlier run."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    canceled: int = 0
    images: int = 0
    #: Known dollars; `unknown_costs` counts attempts whose cost is unknown (then the total is too).
    cost_usd: float = 0.0
    unknown_costs: int = 0
    elapsed_s: float = 0.0
    failovers: int = 0
    by_provider: dict[str, int] = field(default_factory=dict)


def _total(rows: Sequence[ResultRow]) -> float | None:
    """The rows' dollars; None (unknown, never $0) when any row's cost is unknown."""
    return None if any(r.cost_usd is None for r in rows) else sum(r.cost_known_usd for r in rows)


def _save(result: GenerationResult, item: BatchItem, out: Path) -> list[str]:
    folder = out / "images"
    paths = result.save(folder, stem=file_stem(f"{item.id}-{result.provider}"))
    return [p.relative_to(out).as_posix() for p in paths]


async def _finish_even_if_cancelled(work: asyncio.Future[None]) -> None:
    """Await `work` to the end even if we are cancelled meanwhile (then re-raise the cancellation)."""
    cancelled = False
    while True:
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError


async def run_batch(
    router: Routes,
    items: Sequence[BatchItem],
    out: Path,
    *,
    concurrency: int = 4,
    providers: Sequence[str] | None = None,
    on_item: Callable[[BatchItem, ManifestEntry], None] | None = None,
) -> BatchSummary:
    """Generate every item not yet done in `out`'s manifest, saving images under `out/images`.

    An item counts as done once its images are saved and its manifest entry is written;
    cancelling the run cancels in-flight generations (and their remote jobs) and records
    them as canceled, so the next run does them again. Items that failed are retried on
    the next run too. `providers` restricts every item that does not name its own.
    """
    started = time.monotonic()
    summary = BatchSummary(total=len(items))
    with Manifest(out / MANIFEST) as manifest:
        todo = [item for item in items if not manifest.is_done(item.id)]
        summary.skipped = len(items) - len(todo)

        def commit(item: BatchItem, entry: ManifestEntry, result: GenerationResult | None) -> None:
            if result is not None:
                entry.images = _save(result, item, out)
                for row in entry.rows:
                    if row.succeeded and row.provider == result.provider:
                        row.images = entry.images
            manifest.record(entry)

        async def one(item: BatchItem) -> None:
            request = item.request
            job = item.id
            try:
                result = await router.agenerate(request, providers=item.providers or providers)
            except asyncio.CancelledError:
                manifest.record(ManifestEntry(id=item.id, status="canceled", seed=request.seed))
                summary.canceled += 1
                raise
            except LightningError as exc:
                failed_rows = rows_for_error(
                    exc,
                    job=job,
                    prompt=request.prompt,
                    provider=exc.provider or "router",
                    steps=request.steps,
                    seed=request.seed,
                    width=request.width,
                    height=request.height,
                )
                entry = ManifestEntry(
                    id=item.id,
                    status="failed",
                    provider=exc.provider,
                    seed=request.seed,
                    cost_usd=_total(failed_rows),
                    error=mask_secrets(f"{type(exc).__name__}: {exc.message}"),
                    rows=failed_rows,
                )
                await _finish_even_if_cancelled(asyncio.ensure_future(asyncio.to_thread(commit, item, entry, None)))
                summary.failed += 1
            else:
                rows = rows_for_result(result, job=job, width=request.width, height=request.height)
                entry = ManifestEntry(
                    id=item.id,
                    status="done",
                    provider=result.provider,
                    seed=result.seed,
                    cost_usd=_total(rows),
                    total_s=result.timings.total_s,
                    rows=rows,
                )
                # Saving and journaling finish even on Ctrl-C: the images are paid for.
                await _finish_even_if_cancelled(asyncio.ensure_future(asyncio.to_thread(commit, item, entry, result)))
                summary.done += 1
                summary.images += len(entry.images)
                summary.by_provider[result.provider] = summary.by_provider.get(result.provider, 0) + 1
                if rows and rows[0].provider != result.provider:
                    summary.failovers += 1
            summary.cost_usd += sum(r.cost_known_usd for r in entry.rows)
            summary.unknown_costs += sum(r.cost_usd is None for r in entry.rows)
            if on_item is not None:
                on_item(item, entry)

        try:
            if todo:
                await run_pool(todo, one, concurrency)
        finally:
            summary.elapsed_s = time.monotonic() - started
    return summary
