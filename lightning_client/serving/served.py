"""`Served`: what the server serves, as every route, status page, metric and socket sees it.

One generator or a `Router` over several, behind one typed contract: its name and capabilities,
the generators it spans, its ledger and breakers, its expected wait, generation (with an explicit
order of generators for a router), warm-up and realtime sessions. Nothing in the server probes the
served generator for attributes; what a generator may add (preloading, pipeline counts) is a
`Protocol` here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lightning_client.errors import InvalidRequestError
from lightning_client.generator import BaseGenerator, Capabilities, Generator, expected_wait
from lightning_client.realtime.session import RealtimeSession, open_session
from lightning_client.routing.router import Router

if TYPE_CHECKING:
    from lightning_client.ledger import Ledger
    from lightning_client.request import GenerationRequest
    from lightning_client.result import GenerationResult
    from lightning_client.routing.breaker import CircuitBreaker

__all__ = ["Batching", "Preloading", "Served"]


@runtime_checkable
class Preloading(Protocol):
    """A generator that can load its model before the first request."""

    def aload(self) -> Awaitable[object]: ...


@runtime_checkable
class Batching(Protocol):
    """A generator that counts its pipeline calls (a batch of concurrent requests is one)."""

    @property
    def name(self) -> str: ...

    @property
    def pipeline_calls(self) -> int: ...


class Served:
    """The served generator: `generator` itself, or the `Router` it is."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self._router = generator if isinstance(generator, Router) else None

    @property
    def name(self) -> str:
        return self.generator.name

    @property
    def capabilities(self) -> Capabilities:
        return self.generator.capabilities

    @property
    def model(self) -> str | None:
        """The model it names in attempt records (None: a generator that names none)."""
        if self._router is not None:
            return self._router.model
        return self.generator.model if isinstance(self.generator, BaseGenerator) else None

    @property
    def routes(self) -> bool:
        """Whether a request may give an explicit order of generators (a router's `providers`)."""
        return self._router is not None

    @property
    def generators(self) -> list[Generator]:
        """The generators it spans (the router's, or the generator itself)."""
        return list(self._router.generators) if self._router is not None else [self.generator]

    @property
    def ledger(self) -> Ledger | None:
        """The router's ledger, where the server's attempts are recorded (None: a lone generator)."""
        return None if self._router is None else self._router.ledger

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """Each member's circuit breaker, by name (none without a router)."""
        return {} if self._router is None else self._router.breakers

    @property
    def batching(self) -> list[Batching]:
        """The members that batch concurrent requests into pipeline calls."""
        return [g for g in self.generators if isinstance(g, Batching)]

    def expected_wait_s(self) -> float | None:
        """What the served generator reports as its own expected wait (None: unknown)."""
        return expected_wait(self.generator)

    def order(self, providers: Sequence[str] | None) -> Sequence[str] | None:
        """A request's explicit order of generators, checked: a lone generator takes only its own name
        (then None: nothing to order); `InvalidRequestError` otherwise."""
        if providers is None or self._router is not None:
            return providers
        if list(providers) != [self.name]:
            raise InvalidRequestError(
                f"providers={list(providers)!r} is invalid; this server serves only {self.name!r}", field="providers"
            )
        return None

    async def agenerate(self, request: GenerationRequest, providers: Sequence[str] | None = None) -> GenerationResult:
        """One generation, in the explicit order `providers` when given (see `order`)."""
        providers = self.order(providers)
        if providers is not None and self._router is not None:
            return await self._router.agenerate(request, providers=providers)
        return await self.generator.agenerate(request)

    async def aload(self) -> None:
        """Load every member that can preload (`Preloading`)."""
        for generator in self.generators:
            if isinstance(generator, Preloading):
                await generator.aload()

    def realtime(self, provider: str | None, *, throttle_s: float, ledger: Ledger) -> RealtimeSession:
        """A realtime session: the router's (over all, or only `provider`), or the generator's own,
        recording into `ledger` (a router records into its own). Opened here, above the realtime
        layer, as the concrete `RealtimeSession` (the server sets its `gate`)."""
        if self._router is not None:
            return open_session(self._router, throttle_s=throttle_s, providers=None if provider is None else [provider])
        if not isinstance(self.generator, BaseGenerator):
            raise InvalidRequestError(f"{self.name} has no realtime sessions", field="provider")
        return open_session(self.generator, throttle_s=throttle_s, ledger=ledger)

    async def aclose(self) -> None:
        await self.generator.aclose()
