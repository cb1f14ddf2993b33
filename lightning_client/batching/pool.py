"""Run a coroutine per item with bounded concurrency; cancelling the pool cancels every in-flight item."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["run_pool"]

T = TypeVar("T")


async def run_pool(items: Iterable[T], worker: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    """Await `worker(item)` for every item, at most `concurrency` at a time.

    If a worker raises or the pool itself is cancelled, the other in-flight workers are
    cancelled and awaited before the exception propagates, so nothing keeps running.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    pending = iter(items)

    async def drain() -> None:
        for item in pending:  # one shared iterator: each item goes to exactly one worker
            await worker(item)

    tasks = [asyncio.ensure_future(drain()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*tasks)
    finally:
        # When the pool was cancelled, gather has already cancelled and awaited every worker;
        # only workers still running (a sibling failed) are cancelled, so none is cut short twice.
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
