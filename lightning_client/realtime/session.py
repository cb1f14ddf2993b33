"""`RealtimeSession`: latest-wins generation that follows a stream of sends (a person typing).

```python
async with gen.realtime(throttle_s=0.1) as session:
    await session.send("a red fox")
    await session.send("a red fox in the snow")   # replaces the first if it was not sent yet
    await session.finish()                         # iteration ends once the last send is answered
    async for result in session:
        print(result.send_id, result.prompt, result.latency_s)
```

Rules: at most one job runs per session. A send made while an earlier one waits replaces it (the
earlier one is never sent: `superseded`). When the next job is due (at most one per `throttle_s`), a
job still running is cancelled if the backend can (`cancelled`); a backend that cannot cancel finishes
its job first, and that result is still served. Results are served in send order, never an older one
after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from lightning_client._sync import run_sync
from lightning_client.errors import InvalidRequestError, LightningError
from lightning_client.generator import AttemptRecorder, Generator, as_request, observe_attempts
from lightning_client.realtime.router_backend import RouterBackend
from lightning_client.realtime_backend import RealtimeBackend, backend_for
from lightning_client.realtime_contract import RealtimeResult, RealtimeStats, Transport
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult
from lightning_client.routing.router import Router

__all__ = ["JobGate", "RealtimeSession", "SyncRealtimeSession", "open_session"]

#: Held around each job from before it is sent until it has ended (a server's admission slot); a
#: `LightningError` raised on entry fails that job, and nothing is sent.
JobGate = Callable[[], contextlib.AbstractAsyncContextManager[object]]

#: The default minimum interval between two jobs (fal's own client throttles to one per 128 ms).
DEFAULT_THROTTLE_S = 0.1


@dataclass
class _Send:
    send_id: int
    request: GenerationRequest
    at: float


@dataclass
class _Job:
    send: _Send
    task: asyncio.Task[None]
    superseded: bool = False


_END = object()


class RealtimeSession:
    """A latest-wins session on one backend; an async context manager (and `with` gives a sync one).

    Args:
        backend: what runs the jobs (see `Generator.realtime()`).
        throttle_s: minimum seconds between two jobs sent to the provider.
        ledger: where every job's attempt is recorded (besides observers already active).
        gate: held around each job (see `JobGate`); settable until `start()`.
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        *,
        throttle_s: float = DEFAULT_THROTTLE_S,
        ledger: AttemptRecorder | None = None,
        gate: JobGate | None = None,
    ):
        if not throttle_s >= 0:
            raise InvalidRequestError(
                f"throttle_s={throttle_s!r} is invalid; allowed: seconds >= 0", field="throttle_s"
            )
        self.backend = backend
        self.throttle_s = float(throttle_s)
        self.ledger = ledger
        self.gate = gate
        self._stats = RealtimeStats()
        self._next_id = 0
        self._pending: _Send | None = None
        self._job: _Job | None = None
        self._last_sent = -float("inf")
        self._last_served = 0
        self._finishing = False
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._results: asyncio.Queue[Any] | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The generator the session runs on now."""
        return self.backend.provider

    @property
    def transport(self) -> Transport:
        return self.backend.transport

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> RealtimeStats:
        """The session's counters so far."""
        return self._stats

    async def start(self) -> RealtimeSession:
        """Connect the backend and start dispatching (done by `async with`)."""
        if self._dispatcher is not None:
            return self
        if self._closed:
            raise RuntimeError("this realtime session is closed")
        self._wake = asyncio.Event()
        self._results = asyncio.Queue()
        with self._observing():
            await self.backend.start()
            # Created inside the observer context, so every job's attempt reaches the ledger.
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        return self

    async def send(self, request: GenerationRequest | str | None = None, **fields: Any) -> int:
        """Ask for an image for this request (or prompt plus fields); returns the send's id (1, 2, ...).

        Invalid input raises `InvalidRequestError` here, and nothing is sent.
        """
        if self._closed or self._finishing:
            raise RuntimeError("this realtime session no longer takes sends (finished or closed)")
        if self._wake is None:
            raise RuntimeError("start the session first: `async with gen.realtime() as session`")
        req = as_request(request, fields)
        problems = self.backend.capabilities.problems(req)
        if problems:
            raise InvalidRequestError(
                f"{self.backend.provider} cannot serve this request: " + "; ".join(problems),
                provider=self.backend.provider,
                field=problems[0].split("=", 1)[0],
            )
        self._next_id += 1
        superseded = 1 if self._pending is not None else 0
        self._pending = _Send(self._next_id, req, time.monotonic())
        self._count(sends=1, superseded=superseded)
        self._wake.set()
        return self._next_id

    async def finish(self) -> None:
        """Take no more sends; iteration ends once the pending and running sends are answered."""
        self._finishing = True
        if self._wake is not None:
            self._wake.set()

    def __aiter__(self) -> RealtimeSession:
        return self

    async def __anext__(self) -> RealtimeResult:
        """The next result; a failed job raises its `LightningError` (iterate again to go on)."""
        if self._results is None:
            raise StopAsyncIteration
        item = await self._results.get()
        if item is _END:
            self._results.put_nowait(_END)  # every later call ends too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, RealtimeResult)
        return item

    async def aclose(self) -> None:
        """Cancel what is running, close the backend and end iteration."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        tasks = [t for t in (self._dispatcher,) if t is not None]
        job = self._job
        if job is not None and not job.task.done():
            job.superseded = True
            job.task.cancel()
            self._count(cancelled=1)
            tasks.append(job.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.backend.aclose()
        if self._results is not None:
            self._results.put_nowait(_END)

    async def __aenter__(self) -> RealtimeSession:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __enter__(self) -> SyncRealtimeSession:
        return SyncRealtimeSession(self).__enter__()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        run_sync(self.aclose())

    def __repr__(self) -> str:
        return f"RealtimeSession(provider={self.provider!r}, transport={self.transport!r}, {self._stats})"

    # -- internals -------------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        values = {name: getattr(self._stats, name) + delta for name, delta in deltas.items()}
        self._stats = RealtimeStats(**{**self._stats.__dict__, **values})

    @contextlib.contextmanager
    def _observing(self) -> Iterator[None]:
        if self.ledger is None:
            yield
            return
        with observe_attempts(self.ledger.record):
            yield

    async def _dispatch(self) -> None:
        assert self._wake is not None and self._results is not None
        try:
            while True:
                if self._pending is None:
                    job = self._job
                    if self._finishing and (job is None or job.task.done()):
                        if job is not None:
                            await asyncio.gather(job.task, return_exceptions=True)
                        self._results.put_nowait(_END)
                        return
                    self._wake.clear()
                    if job is not None and not job.task.done():
                        await _first(self._wake.wait(), job.task)
                    else:
                        await self._wake.wait()
                    continue
                delay = self._last_sent + self.throttle_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                job = self._job
                if job is not None and not job.task.done():
                    if self.backend.cancellable:
                        job.superseded = True
                        job.task.cancel()
                        self._count(cancelled=1)
                    else:
                        await asyncio.gather(job.task, return_exceptions=True)
                pending, self._pending = self._pending, None
                if pending is None:  # pragma: no cover - only aclose clears it, and it cancels us first
                    continue
                self._last_sent = time.monotonic()
                if self.gate is None:
                    self._count(sent=1)
                task = asyncio.get_running_loop().create_task(self._run(pending))
                self._job = _Job(pending, task)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._results.put_nowait(exc)
            self._results.put_nowait(_END)
            raise

    async def _run(self, send: _Send) -> None:
        assert self._results is not None
        try:
            if self.gate is None:
                result = await self.backend.run(send.request)
            else:
                async with self.gate():
                    self._count(sent=1)  # admitted: sent now
                    result = await self.backend.run(send.request)
        except asyncio.CancelledError:
            raise
        except LightningError as exc:
            self._count(failed=1)
            if not self._is_superseded(send):
                exc.send_id = send.send_id  # type: ignore[attr-defined]
                self._results.put_nowait(exc)
            return
        if self._is_superseded(send) or send.send_id < self._last_served:
            return
        self._last_served = send.send_id
        self._count(served=1)
        self._results.put_nowait(self._wrap(result, send))

    def _is_superseded(self, send: _Send) -> bool:
        job = self._job
        return job is not None and job.send is send and job.superseded

    def _wrap(self, result: GenerationResult, send: _Send) -> RealtimeResult:
        values = dict(result)
        extra = [w for w in self.backend.warnings if w not in result.warnings]
        values["warnings"] = [*result.warnings, *extra]
        return RealtimeResult.model_construct(
            **values,
            send_id=send.send_id,
            latency_s=time.monotonic() - send.at,
            transport=self.backend.transport,
            emulated=self.backend.emulated,
        )


async def _first(*waitables: Any) -> None:
    """Wait until the first of these coroutines or tasks is done (coroutines started here are cancelled)."""
    futures = [asyncio.ensure_future(w) for w in waitables]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, waitable in zip(futures, waitables, strict=True):
            if future is not waitable and not future.done():
                future.cancel()


def open_session(
    generator: Generator,
    *,
    throttle_s: float = DEFAULT_THROTTLE_S,
    ledger: AttemptRecorder | None = None,
    providers: Sequence[str] | None = None,
) -> RealtimeSession:
    """A session on `generator`'s own backend, or for a router one that moves across its generators
    (`providers`: which ones, in order; a router records into its own ledger)."""
    if isinstance(generator, Router):
        return RealtimeSession(RouterBackend(generator, providers), throttle_s=throttle_s, ledger=ledger)
    if providers is not None:
        raise ValueError(f"{generator.name} is not a router: it has no providers to choose from")
    return RealtimeSession(backend_for(generator), throttle_s=throttle_s, ledger=ledger)


class SyncRealtimeSession:
    """The same session for scripts: `with gen.realtime() as session:`, then `session.send(...)`,
    `for result in session:` and `session.stats()`, each call run on the SDK's background loop."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session

    def __enter__(self) -> SyncRealtimeSession:
        run_sync(self.session.start())
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def send(self, request: GenerationRequest | str | None = None, **fields: Any) -> int:
        """See `RealtimeSession.send`."""
        return run_sync(self.session.send(request, **fields))

    def finish(self) -> None:
        """See `RealtimeSession.finish`."""
        run_sync(self.session.finish())

    def stats(self) -> RealtimeStats:
        return self.session.stats()

    def __iter__(self) -> Iterator[RealtimeResult]:
        while True:
            try:
                yield run_sync(self.session.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        run_sync(self.session.aclose())
