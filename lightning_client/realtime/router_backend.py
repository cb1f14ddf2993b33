"""`RouterBackend`: a router's realtime backend, which moves to the next generator when a session fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from lightning_client.errors import AllProvidersFailedError, LightningError
from lightning_client.generator import AttemptEvent, Capabilities, observe_attempts
from lightning_client.realtime_backend import RealtimeBackend, backend_for, is_session_failure
from lightning_client.realtime_contract import Transport
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, GenerationResult, GenerationWarning

if TYPE_CHECKING:
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

__all__ = ["RouterBackend"]


class RouterBackend(RealtimeBackend):
    """The session on the first of the router's generators that can serve it; on a session failure, the next.

    A generator whose circuit breaker is open is passed over; session results and failures count
    towards the router's breakers as its own calls do.

    Every attempt is recorded in the router's ledger and charged to its budget: each job reserves its
    expected cost before it is sent (`BudgetExceededError` when it does not fit, and nothing is sent)
    and every attempt's known cost is spent when it ends. A job that failed with a session failure
    is run again on the next generator (a failover, never a re-send to the same provider).
    """

    def __init__(self, router: Router, providers: Sequence[str] | None = None) -> None:
        self.router = router
        by_name = {g.name: g for g in router.generators}
        if providers is not None:
            unknown = [p for p in providers if p not in by_name]
            if unknown:
                raise ValueError(f"unknown provider(s) {unknown}; the router has: {', '.join(by_name)}")
        names = list(providers) if providers is not None else list(by_name)
        self._generators = [by_name[n] for n in names]
        self._index = 0
        self._current: RealtimeBackend | None = None
        self._failed: list[Attempt] = []

    @property
    def current(self) -> RealtimeBackend | None:
        """The backend the session runs on now."""
        return self._current

    @property
    def provider(self) -> str:
        return self._current.provider if self._current is not None else "router"

    @property
    def transport(self) -> Transport:
        return self._current.transport if self._current is not None else "create-and-cancel"

    @property
    def cancellable(self) -> bool:
        return self._current.cancellable if self._current is not None else True

    @property
    def capabilities(self) -> Capabilities:
        return self.router.capabilities

    @property
    def warnings(self) -> list[GenerationWarning]:
        return self._current.warnings if self._current is not None else []

    @property
    def emulated(self) -> bool:  # type: ignore[override]
        return self._current.emulated if self._current is not None else False

    @contextlib.contextmanager
    def _recording(self) -> Iterator[Ledger]:
        with observe_attempts(self._observe):
            yield self.router.ledger

    def _observe(self, event: AttemptEvent, attempt: Attempt) -> None:
        """As the router does for its own calls: record, learn the cost, spend it from the budget."""
        self.router.ledger.record(event, attempt)
        if event == "end" and attempt.outcome != "skipped":
            generator = next((g for g in self._generators if g.name == attempt.provider), None)
            if generator is not None:
                self.router.stats.observe(generator, attempt)
            self.router.budget.spend(attempt.cost.known_usd, attempt.started_at)

    async def start(self) -> None:
        await self._next(None)

    async def _next(self, request: GenerationRequest | None) -> RealtimeBackend:
        """Open the next generator's backend that can serve `request` (the current one when it can)."""
        errors: list[str] = []
        while self._index < len(self._generators):
            if self._current is not None:
                if request is None or not self._current.capabilities.problems(request):
                    return self._current
                await self._current.aclose()  # cannot serve this request: move on
                self._current = None
                self._index += 1
                continue
            generator = self._generators[self._index]
            breaker = self.router.breakers.get(generator.name)
            if breaker is not None and breaker.state == "open":
                errors.append(f"{generator.name}: circuit breaker open")
                self._index += 1
                continue
            if request is not None and generator.capabilities.problems(request):
                errors.append(f"{generator.name}: " + "; ".join(generator.capabilities.problems(request)))
                self._index += 1
                continue
            backend = backend_for(generator)
            try:
                with self._recording():
                    await backend.start()
            except LightningError as exc:
                if not is_session_failure(exc):
                    raise
                errors.append(f"{generator.name}: {type(exc).__name__}: {exc.message}")
                await backend.aclose()
                self._index += 1
                continue
            self._current = backend
            return backend
        raise AllProvidersFailedError(
            "no generator could run the realtime session: " + ("; ".join(errors) or "none configured"),
            provider="router",
            attempts=self._failed,
        )

    async def run(self, request: GenerationRequest) -> GenerationResult:
        while True:
            backend = await self._next(request)
            breaker = self.router.breakers.get(backend.provider)
            budget = self.router.budget
            reservation = (
                budget.reserve(
                    self.router.expected_cost(request, backend.provider) or 0.0,
                    what=f"realtime job on {backend.provider}",
                )
                if budget.limited
                else None
            )
            try:
                with self._recording():
                    result = await backend.run(request)
            except LightningError as exc:
                if not is_session_failure(exc):
                    raise
                if breaker is not None:
                    breaker.record_failure()
                if exc.attempt is not None:
                    self._failed.append(exc.attempt)
                await backend.aclose()
                self._current = None
                self._index += 1
                continue
            finally:
                if reservation is not None:
                    reservation.release()
            if breaker is not None:
                breaker.record_success()
            return result

    async def aclose(self) -> None:
        if self._current is not None:
            await self._current.aclose()
            self._current = None
