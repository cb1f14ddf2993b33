"""What a realtime session offers its callers, below the generator contract.

`Generator.realtime()` returns a `RealtimeSessionLike`: the public surface of
`lightning_client.realtime.RealtimeSession` (which satisfies it), with its results, counters and
`Transport`. Defined here, beneath `lightning_client.generator`, so the generator contract names
what it returns without importing the realtime layer above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from typing_extensions import Self

from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult

__all__ = ["RealtimeResult", "RealtimeSessionLike", "RealtimeStats", "SyncRealtimeSessionLike", "Transport"]

#: How a backend reaches its provider: fal's realtime socket, fal's queue API after the socket was
#: refused, in-process on a warm pipeline, or create-and-cancel over a generator's normal API.
Transport = Literal["websocket", "queue", "in-process", "create-and-cancel"]


class RealtimeResult(GenerationResult):
    """A `GenerationResult` served by a realtime session, saying which send it answers."""

    send_id: int
    #: Seconds from the `send` call to the result being ready.
    latency_s: float
    transport: str
    emulated: bool = False


@dataclass(frozen=True)
class RealtimeStats:
    """Counters of one session.

    sends: `send` calls; sent: jobs started on the provider; superseded: sends replaced before they
    were sent (never billed); cancelled: running jobs cancelled because a newer send replaced them
    (or the session closed); served: results yielded; failed: jobs that ended in an error (a job
    its gate refused included: never sent).
    """

    sends: int = 0
    sent: int = 0
    superseded: int = 0
    cancelled: int = 0
    served: int = 0
    failed: int = 0


class SyncRealtimeSessionLike(Protocol):
    """A session for scripts (`with gen.realtime() as session:`), each call run to completion."""

    def __enter__(self) -> Self: ...

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None: ...

    def send(self, request: GenerationRequest | str | None = None, **fields: Any) -> int: ...

    def finish(self) -> None: ...

    def stats(self) -> RealtimeStats: ...

    def __iter__(self) -> Iterator[RealtimeResult]: ...

    def close(self) -> None: ...


class RealtimeSessionLike(Protocol):
    """A latest-wins realtime session: `async with` it, `send`, `finish`, iterate its results;
    `with` gives the `SyncRealtimeSessionLike` for scripts."""

    @property
    def provider(self) -> str: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def closed(self) -> bool: ...

    def stats(self) -> RealtimeStats: ...

    async def start(self) -> Self: ...

    async def send(self, request: GenerationRequest | str | None = None, **fields: Any) -> int: ...

    async def finish(self) -> None: ...

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> RealtimeResult: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def __enter__(self) -> SyncRealtimeSessionLike: ...

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None: ...
