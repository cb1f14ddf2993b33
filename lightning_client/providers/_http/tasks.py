"""Background work of the hosted backends: bounded, shielded remote cancels that outlive their caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from lightning_client import _background
from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger

T = TypeVar("T")

log = get_logger("lightning_client.providers.http")


async def bounded(coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T | None:
    """`await coro` within `timeout` seconds; None (logged) when it fails or runs out of time."""
    try:
        async with async_timeout(timeout):
            return await coro
    except TIMEOUT_ERRORS:
        log.warning("%s did not finish within %.1f s", what, timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup must never replace the original error
        log.warning("%s failed: %s", what, exc)
    return None


def keep(task: asyncio.Task[Any]) -> None:
    """Hold a reference to a background task until it is done (`lightning_client._background`)."""
    _background.keep(task)


async def shielded(coro: Coroutine[Any, Any, T], *, timeout: float, what: str) -> T | None:
    """Run `coro` to the end even if the caller is being cancelled; best effort, bounded by `timeout`.

    Used to cancel abandoned remote jobs: failures are logged and give None. If the
    caller is cancelled again while waiting, the work is still finished before the
    cancellation propagates.
    """
    task = asyncio.ensure_future(bounded(coro, timeout, what))
    keep(task)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Cancelled again (say, the deadline passed during the cleanup): finish the bounded work, then go.
        await asyncio.wait({task})
        raise


def run_kept(
    coro: Coroutine[Any, Any, T], on_done: Callable[[T | None], None] | None = None
) -> tuple[asyncio.Task[T], asyncio.Future[T]]:
    """Start `coro` in a task that runs on when its awaiter is cancelled; returns the task and the future
    to await for its result.

    As `await asyncio.shield(task)`, but a turn of the event loop sooner: the task hands its result to
    the future itself rather than through a done-callback. Cancelling the awaiter cancels only the future.
    `on_done(result)` (None when `coro` failed) runs as `coro` ends, before the awaiter resumes.
    """
    answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    async def run() -> T:
        result: T | None = None
        try:
            result = await coro
        except asyncio.CancelledError:
            answer.cancel()
            raise
        except BaseException as exc:
            if not answer.done():
                answer.set_exception(exc)
            raise
        finally:
            if on_done is not None:
                on_done(result)
        if not answer.done():
            answer.set_result(result)
        return result

    task = asyncio.ensure_future(run())
    retrieve_errors(task)
    retrieve_errors(answer)
    return task, answer


def retrieve_errors(future: asyncio.Future[Any]) -> None:
    """Mark `future`'s error as seen even if nobody awaits it (an abandoned create's answer)."""
    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())


def detach(coro: Coroutine[Any, Any, Any], *, timeout: float, what: str) -> None:
    """Run `coro` in the background, bounded by `timeout`; failures are logged."""
    keep(asyncio.ensure_future(bounded(coro, timeout, what)))


async def gather_all(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """`asyncio.gather(*coros)`, with a lone coroutine awaited in place (no task, no extra turn of the loop)."""
    if len(coros) == 1:
        return [await coros[0]]
    return list(await asyncio.gather(*coros))
