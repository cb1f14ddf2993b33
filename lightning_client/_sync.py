"""Running coroutines from synchronous code, also inside a running event loop (Jupyter)."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _portal_loop() -> asyncio.AbstractEventLoop:
    """One long-lived background loop shared by every sync call.

    A single loop (rather than `asyncio.run` per call) keeps connection pools alive
    between sync calls and never closes a loop a client is still bound to.
    """
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="lightning-client-sync", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _stop_portal() -> None:
    if _loop is not None and not _loop.is_closed():
        _loop.call_soon_threadsafe(_loop.stop)


atexit.register(_stop_portal)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the background loop and return its result.

    KeyboardInterrupt in the caller cancels the coroutine (so remote jobs are cancelled)
    before re-raising.
    """
    loop = _portal_loop()
    if threading.current_thread().name == "lightning-client-sync":
        coro.close()
        raise RuntimeError("run_sync() called from the SDK's own event loop; use the async API")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        try:
            future.result(timeout=10)
        except BaseException:  # noqa: BLE001 - the interrupt is what we re-raise
            pass
        raise


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
