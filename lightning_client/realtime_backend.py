"""The realtime backend contract providers implement: `RealtimeBackend`, its transports, create-and-cancel
over any generator (`GeneratorBackend`), and `backend_for`, the backend a generator provides.

Below the providers (they build their backends on it) and below `lightning_client.realtime`, whose
sessions run on these backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from lightning_client.errors import (
    AuthenticationError,
    GenerationTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from lightning_client.generator import Capabilities, Generator
from lightning_client.realtime_contract import Transport
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult, GenerationWarning

__all__ = ["GeneratorBackend", "RealtimeBackend", "backend_for", "is_session_failure"]

#: Errors that say the provider cannot serve the session now (rather than "this request is bad").
_SESSION_FAILURES = (ProviderUnavailableError, AuthenticationError, RateLimitError, GenerationTimeoutError)


def is_session_failure(error: BaseException) -> bool:
    """True when `error` means the session's provider failed (a router moves to the next one)."""
    return isinstance(error, _SESSION_FAILURES)


class RealtimeBackend(ABC):
    """One provider's way of running realtime jobs, one at a time per session.

    `run` makes one job and returns its result; cancelling the task awaiting it cancels the
    job where the provider allows it (`cancellable`). A backend that cannot cancel gets one job
    at a time: the session waits for it before sending the next.
    """

    #: True when the provider has no realtime mode and the session emulates one.
    emulated: bool = False

    @property
    @abstractmethod
    def provider(self) -> str:
        """The generator name results come from."""

    @property
    @abstractmethod
    def transport(self) -> Transport: ...

    @property
    @abstractmethod
    def cancellable(self) -> bool:
        """Whether a superseded in-flight job can be cancelled."""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @property
    def warnings(self) -> list[GenerationWarning]:
        """Warnings about the session itself, added to every result (e.g. a fallback)."""
        return []

    async def start(self) -> None:
        """Connect or warm up before the first job (override)."""

    @abstractmethod
    async def run(self, request: GenerationRequest) -> GenerationResult: ...

    async def aclose(self) -> None:
        """Release what the backend holds (override)."""


class GeneratorBackend(RealtimeBackend):
    """Jobs through a generator's own `agenerate`: a superseded job is cancelled like any abandoned call.

    That is create-and-cancel for hosted generators (flagged `emulated`), and in-process work for
    the local pipeline (stopped at its next denoising step).
    """

    def __init__(
        self,
        generator: Generator,
        *,
        transport: Transport = "create-and-cancel",
        emulated: bool = True,
        warnings: Sequence[GenerationWarning] = (),
    ) -> None:
        self.generator = generator
        self._transport: Transport = transport
        self.emulated = emulated
        self._warnings = list(warnings)
        if emulated and not self._warnings:
            self._warnings.append(
                GenerationWarning(
                    kind="emulated",
                    setting="realtime",
                    message=f"{generator.name} has no realtime mode: each send is a job of its own, "
                    "cancelled when a newer send replaces it",
                    provider=generator.name,
                )
            )

    @property
    def provider(self) -> str:
        return self.generator.name

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def cancellable(self) -> bool:
        return True

    @property
    def capabilities(self) -> Capabilities:
        return self.generator.capabilities

    @property
    def warnings(self) -> list[GenerationWarning]:
        return list(self._warnings)

    async def run(self, request: GenerationRequest) -> GenerationResult:
        return await self.generator.agenerate(request)


def backend_for(generator: Generator) -> RealtimeBackend:
    """The realtime backend a generator provides (`_realtime_backend()`), else create-and-cancel."""
    factory = getattr(generator, "_realtime_backend", None)
    if callable(factory):
        backend = factory()
        if not isinstance(backend, RealtimeBackend):
            raise TypeError(f"{type(generator).__name__}._realtime_backend() returned {type(backend).__name__}")
        return backend
    return GeneratorBackend(generator)
