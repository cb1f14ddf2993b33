"""Running coroutines from synchronous code, also inside a running event loop (Jupyter).

Every sync call runs on one background loop in a daemon thread. That loop is remade in a forked
child (the child inherits the loop object but not its thread), and closed for good at interpreter
exit, after the calls still running there are cancelled and their remote cleanups have had a few
seconds to finish; a sync call after that raises `RuntimeError` saying so.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from lightning_client import _background

__all__ = ["INTERRUPT_WAIT_S", "PerLoop", "run_sync"]

T = TypeVar("T")

#: How long Ctrl-C (or interpreter exit) waits for cancelled calls to cancel their remote jobs.
INTERRUPT_WAIT_S = 5.0
_THREAD_NAME = "lightning-client-sync"


class _Portal:
    """The background loop, its thread, the process it belongs to and the calls running on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=_THREAD_NAME, daemon=True)
        self.pid = os.getpid()
        self.calls: set[asyncio.Task[Any]] = set()
        self.thread.start()

    def usable(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive() and not self.loop.is_closed()


_lock = threading.Lock()
_portal: _Portal | None = None
_shut_down = False


def _portal_loop() -> _Portal:
    """The one long-lived background loop shared by every sync call (made again after a fork).

    A single loop (rather than `asyncio.run` per call) keeps connection pools alive
    between sync calls and never closes a loop a client is still bound to.
    """
    global _portal
    with _lock:
        if _shut_down:
            raise RuntimeError(
                "lightning_client's synchronous API is not available during interpreter shutdown "
                "(its event loop has been stopped); call it before exit, or use the async API"
            )
        if _portal is None or not _portal.usable():
            _portal = _Portal()
        return _portal


def _after_fork_in_child() -> None:
    # The inherited loop has no thread in this process, and a lock held at fork time stays held:
    # start from scratch (the parent's loop object is left alone, never closed from here).
    global _lock, _portal
    _lock = threading.Lock()
    _portal = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the background loop and return its result.

    KeyboardInterrupt in the caller cancels the coroutine and waits (up to `INTERRUPT_WAIT_S`, or
    until a second Ctrl-C) for it to finish cancelling, so its remote jobs are cancelled and the
    attempts recorded, then re-raises.
    """
    if threading.current_thread().name == _THREAD_NAME:
        coro.close()
        raise RuntimeError("run_sync() called from the SDK's own event loop; use the async API")
    try:
        portal = _portal_loop()
    except RuntimeError:
        coro.close()
        raise
    started: concurrent.futures.Future[asyncio.Task[T]] = concurrent.futures.Future()
    finished: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        task = portal.loop.create_task(coro)
        portal.calls.add(task)
        task.add_done_callback(portal.calls.discard)
        task.add_done_callback(lambda done: _transfer(done, finished))
        started.set_result(task)

    portal.loop.call_soon_threadsafe(start)
    try:
        return finished.result()
    except KeyboardInterrupt:
        task = started.result(timeout=INTERRUPT_WAIT_S)
        portal.loop.call_soon_threadsafe(task.cancel)
        with contextlib.suppress(BaseException):  # a second Ctrl-C stops the wait; the first is re-raised
            concurrent.futures.wait([finished], timeout=INTERRUPT_WAIT_S)
            asyncio.run_coroutine_threadsafe(_background.drain(INTERRUPT_WAIT_S), portal.loop).result(
                timeout=INTERRUPT_WAIT_S + 1
            )
        raise


def _transfer(task: asyncio.Task[T], target: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        target.cancel()
        return
    error = task.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(task.result())


async def _cancel_calls(portal: _Portal) -> None:
    calls = [t for t in portal.calls if not t.done()]
    for task in calls:
        task.cancel()
    if calls:
        await asyncio.wait(calls, timeout=INTERRUPT_WAIT_S)
    await _background.drain(INTERRUPT_WAIT_S)


def _shutdown() -> None:
    """At interpreter exit: cancel sync calls still running, let their remote cancels finish, stop the loop."""
    global _shut_down
    with _lock:
        _shut_down = True
        portal = _portal
    if portal is None or not portal.usable():
        return
    with contextlib.suppress(BaseException):
        future = asyncio.run_coroutine_threadsafe(_cancel_calls(portal), portal.loop)
        future.result(timeout=2 * INTERRUPT_WAIT_S + 1)
    portal.loop.call_soon_threadsafe(portal.loop.stop)
    portal.thread.join(timeout=1.0)


atexit.register(_shutdown)


class PerLoop(Generic[T]):
    """A resource (such as an httpx.AsyncClient) created lazily once per event loop.

    Objects bound to one loop must not be used from another; keeping one per loop lets
    a generator serve sync calls (background loop) and async calls (the caller's loop).
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: WeakKeyDictionary[asyncio.AbstractEventLoop, T] = WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            item = self._items[loop] = self._factory()
        return item

    def pop_current(self) -> T | None:
        """Remove and return the current loop's item, if any."""
        return self._items.pop(asyncio.get_running_loop(), None)

    def pop_all(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Remove and return every (loop, item) pair."""
        items = list(self._items.items())
        self._items.clear()
        return items
