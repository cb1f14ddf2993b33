"""Background cleanups (remote cancels, late-create reapers) that must finish before their loop or the
process goes away: every one is registered here, so `drain()` can wait for them, bounded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["drain", "keep", "pending"]

_tasks: set[asyncio.Task[Any]] = set()


def keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Hold a reference to `task` until it is done (and let `drain()` find it)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def pending(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """Registered tasks of `loop` that are not done yet."""
    return [t for t in list(_tasks) if t.get_loop() is loop and not t.done()]


async def drain(timeout: float) -> bool:
    """Wait up to `timeout` seconds for the running loop's cleanups (including those they start); True when
    none is left."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        waiting = [t for t in pending(loop) if t is not asyncio.current_task()]
        left = deadline - time.monotonic()
        if not waiting:
            return True
        if left <= 0:
            return False
        await asyncio.wait(waiting, timeout=left)
