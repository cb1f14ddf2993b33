"""`Router`: a `Generator` that chooses, retries, fails over and hedges across generators.

Per request it orders the generators (the caller's `providers=[...]`, else the policy),
drops those that cannot serve the request or whose circuit breaker is open (recording
why), checks the budget, then runs rounds: each round tries the candidates in order,
moving to the next at once when one fails (and, with hedging, also when one is slower
than the hedge delay); the first success wins and the others are cancelled. Retryable
failures are tried again in the next round after an exponential, jittered backoff that
honours `retry_after`; tenacity drives the rounds. The request's `timeout_s` is the
deadline for all of it, and each attempt gets what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

from lightning_client import telemetry
from lightning_client._sync import run_sync
from lightning_client.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    RateLimitError,
)
from lightning_client.generator import (
    AttemptEvent,
    BaseGenerator,
    Capabilities,
    ClosingContext,
    Generator,
    as_request,
    expected_wait,
    observe_attempts,
    open_realtime,
)
from lightning_client.ledger import Ledger
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, Cost, GenerationResult, utcnow
from lightning_client.routing.breaker import BreakerConfig, CircuitBreaker
from lightning_client.routing.budget import HOLD_S, Budget, Reservation, SharedBudget
from lightning_client.routing.hooks import AttemptHook, as_hooks, dispatch
from lightning_client.routing.policies import Policy, Stats, make_policy

if TYPE_CHECKING:
    from lightning_client.cache import CacheMode, ResultCache
    from lightning_client.realtime_contract import RealtimeSessionLike
    from lightning_client.routing.recovery import Recovered

__all__ = ["DeadlineExceededError", "HedgeConfig", "Router"]

#: Below this many seconds left no further attempt starts (no provider can create, run
#: and deliver in less; a create sent that late would only be cancelled), and a timeout
#: is the request's deadline running out. Generators stop a little before their deadline.
MIN_ATTEMPT_S = 0.1
#: Longest the router waits for generators to refresh their expected wait before choosing.
REFRESH_WAIT_S = 0.25
#: Extra wait for generators to report their own deadline before the router cancels them.
DEADLINE_GRACE_S = 0.5
#: How long an abandoned request (an error raised, or the caller cancelled) waits for the
#: attempts it cancels to cancel their remote jobs, and how long `drain()` waits by default.
ABANDON_WAIT_S = 5.0

Backoff = Callable[[RetryCallState], float]
#: 0.25 s, 0.5 s, 1 s, ... up to 8 s between rounds, plus up to 0.25 s of random jitter.
DEFAULT_BACKOFF: Backoff = wait_exponential(multiplier=0.25, max=8.0) + wait_random(0, 0.25)


class DeadlineExceededError(AllProvidersFailedError, GenerationTimeoutError):
    """The request's `timeout_s` ran out before any provider succeeded; `attempts` has each try."""


class HedgeConfig(BaseModel):
    """When to start a second provider while the first is still running.

    `delay_s` fixes the delay; when None the delay is the running provider's observed
    `percentile` of total latency (its prior until enough is observed). At most
    `max_hedges` extra providers run per round. The winner is returned at once and losers
    cancel their remote jobs in the background, their final cost reaching the ledger when
    that is done; `cancel_wait_s` > 0 waits up to that long first, so `result.cost`
    includes them.
    """

    model_config = ConfigDict(frozen=True)

    delay_s: float | None = Field(default=None, ge=0.0)
    percentile: float = Field(default=90.0, gt=0.0, le=100.0)
    max_hedges: int = Field(default=1, ge=1)
    cancel_wait_s: float = Field(default=0.0, ge=0.0)

    @classmethod
    def parse(cls, value: HedgeConfig | float | str | None) -> HedgeConfig | None:
        """None, a HedgeConfig, a fixed delay in seconds, or "pNN" (a latency percentile)."""
        if value is None or isinstance(value, HedgeConfig):
            return value
        if isinstance(value, bool):
            raise ValueError("hedge must be None, seconds, 'pNN' or a HedgeConfig, not a bool")
        if isinstance(value, (int, float)):
            return cls(delay_s=float(value))
        if isinstance(value, str) and value.startswith("p"):
            try:
                return cls(percentile=float(value[1:]))
            except ValueError:
                pass
        raise ValueError(f"hedge={value!r} is invalid; use None, seconds (e.g. 1.5), 'p90' or a HedgeConfig")


@dataclass
class _Candidate:
    generator: Generator
    breaker: CircuitBreaker


class _RoundFailed(Exception):
    """A round ended without a success (internal to the retry loop)."""


@dataclass
class _Route:
    """State of one routed request."""

    request: GenerationRequest
    deadline: float | None
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[LightningError] = field(default_factory=list)
    retry: list[_Candidate] = field(default_factory=list)
    not_before: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass
class _Running:
    candidate: _Candidate
    attempts: list[Attempt]
    started: float


class Router(ClosingContext):
    """A `Generator` over several generators, with failover, retries, breakers, hedging and budgets.

    Args:
        generators: the backends, each with a distinct `name`; the router owns them
            (closing the router closes them).
        policy: "priority" (list order), "cheapest", "fastest", "weighted", or a `Policy`.
        ledger: where every attempt is recorded (default: a new in-memory `Ledger`).
        retries: extra rounds for retryable failures after every candidate was tried once.
        backoff: tenacity wait strategy between rounds (default exponential with jitter).
        breaker: `BreakerConfig` for every generator's circuit breaker; False disables them.
        hedge: None (off), a delay in seconds, "p90" (the running provider's p90), or `HedgeConfig`.
        budget_usd, budget_usd_per_day: spending limits checked before anything is sent; with a
            persistent ledger (a file or a `postgresql://` URL) they hold across every process
            using it with the same `budget_name` (`SharedBudget`).
        budget_name: the budget this router's attempts count against in a shared ledger.
        cache: a `ResultCache`: explicit-seed requests identical in every image-changing field
            are served from it (`result.cached`), identical ones in flight share one call.
        hooks: callables `hook(event, attempt)` (spans and metrics come from `lightning_client.telemetry`).
        weights: provider weights for the "weighted" policy.
        prices: the price table used for cost priors.
        max_wait_s: spill-over: skip a generator whose `expected_wait_s()` is above this
            (an attempt `skipped` with the figure); when every one is above it, the least
            busy is still tried. None: never skip for load.
    """

    name = "router"
    model = "router"
    #: The validated `lc.Config` this router was built from (`lc.load_config`), else None. Typed loosely:
    #: configuration is built on routing, not the other way round.
    config: Any = None

    def __init__(
        self,
        generators: Sequence[Generator],
        policy: str | Policy = "priority",
        *,
        ledger: Ledger | None = None,
        retries: int = 2,
        backoff: Backoff | None = None,
        breaker: BreakerConfig | bool | None = None,
        hedge: HedgeConfig | float | str | None = None,
        budget_usd: float | None = None,
        budget_usd_per_day: float | None = None,
        budget_name: str = "default",
        cache: ResultCache | None = None,
        hooks: AttemptHook | Iterable[AttemptHook] | None = None,
        weights: Mapping[str, float] | None = None,
        prices: PriceTable = DEFAULT_PRICES,
        max_wait_s: float | None = None,
    ) -> None:
        self.generators = list(generators)
        if not self.generators:
            raise ValueError("Router needs at least one generator")
        names = [g.name for g in self.generators]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"generator names must be distinct; repeated: {', '.join(duplicates)}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_wait_s is not None and not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0 or None, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self._refreshers = [
            g
            for g in self.generators
            if isinstance(g, BaseGenerator) and type(g).refresh_expected_wait is not BaseGenerator.refresh_expected_wait
        ]
        self.policy = make_policy(policy, weights)
        self.ledger = ledger if ledger is not None else Ledger()
        self.retries = retries
        self.backoff: Backoff = backoff or DEFAULT_BACKOFF
        if breaker is False:  # never opens: neither rule can be reached
            config = BreakerConfig(failure_threshold=2**31, min_calls=2**31)
        else:
            config = breaker if isinstance(breaker, BreakerConfig) else BreakerConfig()
        self._candidates = {g.name: _Candidate(g, CircuitBreaker(config)) for g in self.generators}
        self.hedge = HedgeConfig.parse(hedge)
        self.budget_name = budget_name
        self.cache = cache
        self.budget = self._make_budget(budget_usd, budget_usd_per_day)
        self.hooks = as_hooks(hooks)
        self.stats = Stats(prices)
        history = self.ledger.records()
        self.budget.seed(history)
        for attempt in history:
            known = self._candidates.get(attempt.provider)
            if known is not None:
                self.stats.observe(known.generator, attempt)
        self._capabilities = _union(g.capabilities for g in self.generators)
        self._pending: set[asyncio.Task[GenerationResult]] = set()
        self._pending_lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:
        """What at least one of the generators can serve."""
        return self._capabilities

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Each generator's circuit breaker, by name."""
        return {name: c.breaker for name, c in self._candidates.items()}

    def expected_cost(self, request: GenerationRequest, provider: str) -> float | None:
        """Expected dollars for `request` on `provider` (observed cost per image, else from prices)."""
        per_image = self.stats.cost_per_image(self._candidates[provider].generator)
        return None if per_image is None else per_image * request.num_images

    # -- public API --------------------------------------------------------------------

    async def agenerate(
        self,
        request: GenerationRequest | str | None = None,
        *,
        providers: Sequence[str] | None = None,
        cache: CacheMode | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Generate with failover; `providers` fixes the order of the generators to try.

        With a `ResultCache`, `cache` is "on" (default), "off" (bypass it) or "refresh" (call the
        provider and replace the entry).
        """
        req = as_request(request, fields)
        with telemetry.generation_span(self.name, None, req) as span:
            if self.cache is not None and cache != "off":
                result = await self._through_cache(self.cache, req, providers, cache or "on")
            else:
                result = await self._route(req, providers)
            if span is not None:
                span.finish(result)
        return result

    async def _route(self, req: GenerationRequest, providers: Sequence[str] | None) -> GenerationResult:
        started = time.monotonic()
        route = _Route(req, None if req.timeout_s is None else started + req.timeout_s)
        ordered = self._order(req, providers)
        if self._refreshers:
            await self._refresh()
        candidates = self._spill(route, self._eligible(route, ordered))
        reservation = await self._reserve(req, candidates[0].generator.name)
        try:
            with self.ledger.recording(req):
                result = await self._rounds(route, candidates)
        finally:
            if reservation is not None:
                reservation.release()
        result.attempts = [a.snapshot() for a in route.attempts]
        for attempt in result.attempts:
            if attempt.outcome is None:  # a loser still cancelling remotely; the ledger gets its end
                attempt.outcome = "canceled"
        result.cost = _sum_costs(a.cost for a in route.attempts if a.cost.recorded)
        result.timings.total_s = time.monotonic() - started
        return result

    def generate(
        self,
        request: GenerationRequest | str | None = None,
        *,
        providers: Sequence[str] | None = None,
        cache: CacheMode | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Synchronous `agenerate`."""
        return run_sync(self.agenerate(request, providers=providers, cache=cache, **fields))

    async def arecover(self, folder: str | Path | None = None, *, wait: bool = False) -> list[Recovered]:
        """Collect what processes that died left running: attempts of the ledger without an outcome.

        For each (whose provider is one of this router's generators) the provider is asked for
        its job by id: a finished result is returned (its images saved into `folder` when given)
        and the ledger row completed with outcome and billed cost; a job still running is
        cancelled, or awaited when `wait`. No job is ever created.
        """
        from lightning_client.routing.recovery import arecover

        return await arecover(self, folder, wait=wait)

    def recover(self, folder: str | Path | None = None, *, wait: bool = False) -> list[Recovered]:
        """Synchronous `arecover`."""
        return run_sync(self.arecover(folder, wait=wait))

    def realtime(self, *, throttle_s: float = 0.1, providers: Sequence[str] | None = None) -> RealtimeSessionLike:
        """A realtime session on the first generator that can serve it, moving to the next when that one fails."""
        return open_realtime(self, throttle_s=throttle_s, providers=providers)

    async def aclose(self) -> None:
        """Let cancelled attempts finish cancelling, then close every generator on the running loop."""
        await self.drain()
        await asyncio.gather(*(g.aclose() for g in self.generators))

    def close(self) -> None:
        """Let cancelled attempts of sync calls finish cancelling, then close every generator."""
        with self._pending_lock:
            pending = bool(self._pending)
        if pending:
            with contextlib.suppress(RuntimeError):  # called on the SDK's own loop: nothing to wait on
                run_sync(self.drain())
        for generator in self.generators:
            generator.close()

    def __repr__(self) -> str:
        names = ", ".join(g.name for g in self.generators)
        return f"Router([{names}], policy={self.policy.name!r})"

    # -- result cache --------------------------------------------------------------------

    async def _through_cache(
        self, cache: ResultCache, request: GenerationRequest, providers: Sequence[str] | None, mode: CacheMode
    ) -> GenerationResult:
        """Serve from `cache` when the request has an explicit seed; record a "cached" attempt for a hit."""
        primary = self._order(request, providers)[0].generator
        key = cache.key(request, primary)
        if key is None:  # a seed drawn at random: a new image every time, never cached
            return await self._route(request, providers)
        started = time.monotonic()

        def stored_under(result: GenerationResult) -> str | None:
            served = self._candidates.get(result.provider)
            return None if served is None else cache.key(request, served.generator)

        result = await cache.serve(key, mode, lambda: self._route(request, providers), store_key=stored_under)
        if result.cached:
            now = utcnow()
            attempt = Attempt(
                provider=result.provider,
                model=result.model,
                request_id=result.request_id,
                outcome="cached",
                started_at=now,
                ended_at=now,
                seed=result.seed,
                steps=result.steps,
                num_images=len(result.images),
                cost=Cost(
                    usd=0.0, basis=f"served from the result cache (first made by {result.request_id})", estimated=False
                ),
                note="result cache hit: no provider call",
                budget=self.budget_name,
            )
            attempt.timings.total_s = time.monotonic() - started
            self.ledger.record("end", attempt)
            dispatch(self.hooks, "end", attempt)
            result.attempts, result.cost = [attempt.snapshot()], attempt.cost
            result.timings.total_s = attempt.timings.total_s
        return result

    # -- budget --------------------------------------------------------------------------

    def _make_budget(self, total_usd: float | None, per_day_usd: float | None) -> Budget:
        """In memory, or shared through the ledger's store when the ledger is persistent and a limit is set."""
        if self.ledger.persistent and (total_usd is not None or per_day_usd is not None):
            return SharedBudget(self.ledger, self.budget_name, total_usd, per_day_usd)
        return Budget(total_usd, per_day_usd)

    async def _reserve(self, request: GenerationRequest, provider: str) -> Reservation | None:
        """Hold the request's expected cost on `provider` (a shared budget's store is asked off the loop)."""
        if not self.budget.limited:
            return None
        expected = self.expected_cost(request, provider) or 0.0
        what = f"request for {request.num_images} image(s) on {provider}"
        if isinstance(self.budget, SharedBudget):
            ttl = HOLD_S if request.timeout_s is None else request.timeout_s + 60.0
            return await asyncio.to_thread(self.budget.reserve, expected, what=what, ttl_s=ttl)
        return self.budget.reserve(expected, what=what)

    # -- choosing ------------------------------------------------------------------------

    def _order(self, request: GenerationRequest, providers: Sequence[str] | None) -> list[_Candidate]:
        if providers is None:
            ordered = self.policy.order(self.generators, request, self.stats)
            return self._native_first(request, [self._candidates[g.name] for g in ordered])
        if isinstance(providers, str):
            providers = [providers]
        unknown = [p for p in providers if p not in self._candidates]
        if unknown or not providers:
            raise InvalidRequestError(
                f"providers={list(providers)!r} is invalid; choose from: {', '.join(self._candidates)}",
                field="providers",
                provider=self.name,
            )
        return [self._candidates[p] for p in dict.fromkeys(providers)]

    @staticmethod
    def _native_first(request: GenerationRequest, ordered: list[_Candidate]) -> list[_Candidate]:
        """Generators that serve the request's step count natively before those that would emulate it
        (keeping the order within each group): an emulated step count runs a checkpoint made for another."""
        native = [c for c in ordered if request.steps in c.generator.capabilities.native_steps]
        return native + [c for c in ordered if c not in native]

    def _eligible(self, route: _Route, ordered: list[_Candidate]) -> list[_Candidate]:
        eligible, reasons = [], []
        for candidate in ordered:
            problems = candidate.generator.capabilities.problems(route.request)
            if problems:
                reasons.append((candidate.generator.name, problems))
                self._skip(route, candidate, "cannot serve: " + "; ".join(problems))
            else:
                eligible.append(candidate)
        if not eligible:
            detail = "; ".join(f"{name}: {', '.join(problems)}" for name, problems in reasons)
            raise InvalidRequestError(
                f"no generator can serve this request ({detail})",
                provider=self.name,
                field=reasons[0][1][0].split("=", 1)[0],
            )
        return eligible

    async def _refresh(self) -> None:
        """Let generators whose expected wait needs I/O refresh it, for at most `REFRESH_WAIT_S`."""
        tasks = [asyncio.ensure_future(g.refresh_expected_wait()) for g in self._refreshers]
        done, pending = await asyncio.wait(tasks, timeout=REFRESH_WAIT_S)
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled():
                task.exception()  # a failed refresh leaves the figure as it was; the attempt will tell

    def _spill(self, route: _Route, candidates: list[_Candidate]) -> list[_Candidate]:
        """Skip candidates whose expected wait is above `max_wait_s` (keeping the least busy if all are)."""
        if self.max_wait_s is None:
            return candidates
        waits = {c.generator.name: expected_wait(c.generator) for c in candidates}
        busy = [c for c in candidates if (waits[c.generator.name] or 0.0) > self.max_wait_s]
        if len(busy) == len(candidates):
            least = min(busy, key=lambda c: waits[c.generator.name] or 0.0)
            busy.remove(least)
        for candidate in busy:
            self._skip(
                route,
                candidate,
                f"busy: expected wait {waits[candidate.generator.name]:.2f}s above max_wait_s={self.max_wait_s:g}s",
            )
        return [c for c in candidates if c not in busy]

    def _skip(self, route: _Route, candidate: _Candidate, reason: str) -> None:
        now = utcnow()
        attempt = Attempt(
            provider=candidate.generator.name,
            model=getattr(candidate.generator, "model", None) or None,
            outcome="skipped",
            note=reason,
            seed=route.request.seed,
            steps=route.request.steps,
            started_at=now,
            ended_at=now,
        )
        route.attempts.append(attempt)
        telemetry.skipped(attempt)
        self._on_event("end", attempt, candidate)

    # -- observing ----------------------------------------------------------------------

    def _on_event(self, event: AttemptEvent, attempt: Attempt, candidate: _Candidate) -> None:
        attempt.budget = self.budget_name
        self.ledger.record(event, attempt)
        dispatch(self.hooks, event, attempt)
        if event == "end" and attempt.outcome != "skipped":
            self.stats.observe(candidate.generator, attempt)
            self.budget.spend(attempt.cost.known_usd, attempt.started_at)

    # -- retry rounds -------------------------------------------------------------------

    async def _rounds(self, route: _Route, candidates: list[_Candidate]) -> GenerationResult:
        route.retry = list(candidates)
        retrying = AsyncRetrying(
            stop=lambda state: self._stop(route, state),
            wait=lambda state: self._wait(route, state),
            retry=retry_if_exception_type(_RoundFailed),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._round(route)
        except _RoundFailed:
            pass
        raise self._failure(route)

    def _wait(self, route: _Route, state: RetryCallState) -> float:
        now = time.monotonic()
        ready_in = min((route.not_before.get(c.generator.name, now) - now for c in route.retry), default=0.0)
        return max(self.backoff(state), ready_in + 0.01 if ready_in > 0 else 0.0)

    def _stop(self, route: _Route, state: RetryCallState) -> bool:
        if not route.retry or state.attempt_number > self.retries:
            return True
        remaining = route.remaining()
        return remaining is not None and state.upcoming_sleep + MIN_ATTEMPT_S >= remaining

    def _failure(self, route: _Route) -> AllProvidersFailedError:
        sent = [a for a in route.attempts if a.outcome != "skipped"]
        lines = [
            f"{a.provider}: {a.error_type or a.outcome}: {a.error_message or a.note or ''}".rstrip(": ")
            for a in route.attempts
        ]
        remaining = route.remaining()
        if route.timed_out or (remaining is not None and remaining <= MIN_ATTEMPT_S):
            error: AllProvidersFailedError = DeadlineExceededError(
                f"no provider succeeded within timeout_s={route.request.timeout_s} "
                f"({len(sent)} attempt(s)): " + " | ".join(lines),
                attempts=route.attempts,
                provider=self.name,
            )
        else:
            error = AllProvidersFailedError(
                f"all providers failed ({len(sent)} attempt(s)): " + " | ".join(lines),
                attempts=route.attempts,
                provider=self.name,
                retryable=any(e.retryable for e in route.errors),
            )
        if route.errors:
            error.__cause__ = route.errors[-1]
        return error

    # -- one round: failover and hedging ------------------------------------------------

    async def _round(self, route: _Route) -> GenerationResult:
        now = time.monotonic()
        queue = deque(c for c in route.retry if route.not_before.get(c.generator.name, 0.0) <= now)
        route.retry = [c for c in route.retry if c not in queue]
        running: dict[asyncio.Task[GenerationResult], _Running] = {}
        hedges = 0
        try:
            while True:
                if not running:
                    if not self._start_next(route, queue, running, hedge=False):
                        break
                    continue
                timeout, hedge_due = self._next_timeout(route, queue, running, hedges)
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    if hedge_due:
                        hedges += self._start_next(route, queue, running, hedge=True)
                        continue
                    route.timed_out = True
                    break
                for task in done:
                    info = running.pop(task)
                    result = self._settle(route, task, info)
                    if result is not None:
                        wait = 0.0 if self.hedge is None else self.hedge.cancel_wait_s
                        await self._cancel(running, "cancelled: another provider won", wait)
                        return result
        finally:
            if running:
                await self._cancel(running, "cancelled: the request was abandoned", ABANDON_WAIT_S)
        if route.timed_out:
            route.retry = []
        raise _RoundFailed()

    def _next_timeout(
        self,
        route: _Route,
        queue: deque[_Candidate],
        running: dict[asyncio.Task[GenerationResult], _Running],
        hedges: int,
    ) -> tuple[float | None, bool]:
        remaining = route.remaining()
        timeout = None if remaining is None else max(remaining, 0.0) + DEADLINE_GRACE_S
        if self.hedge is None or not queue or hedges >= self.hedge.max_hedges:
            return timeout, False
        latest = max(running.values(), key=lambda r: r.started)
        delay = self.hedge.delay_s
        if delay is None:
            delay = self.stats.for_generator(latest.candidate.generator).latency_percentile(self.hedge.percentile)
        hedge_in = max(latest.started + delay - time.monotonic(), 0.0)
        if timeout is not None and timeout <= hedge_in:
            return timeout, False
        return hedge_in, True

    def _start_next(
        self,
        route: _Route,
        queue: deque[_Candidate],
        running: dict[asyncio.Task[GenerationResult], _Running],
        *,
        hedge: bool,
    ) -> bool:
        """Start the next candidate that may be sent; False when none is left (or no time)."""
        while queue:
            sent = any(a.outcome != "skipped" for a in route.attempts)
            remaining = route.remaining()
            # the first attempt always goes (a tiny timeout_s is the caller's choice; the generator enforces it)
            if remaining is not None and (remaining <= 0 or (sent and remaining <= MIN_ATTEMPT_S)):
                route.timed_out = True
                queue.clear()
                return False
            candidate = queue.popleft()
            if sent and self.budget.limited:
                expected = self.expected_cost(route.request, candidate.generator.name) or 0.0
                try:
                    self.budget.check(expected, what=f"failover to {candidate.generator.name}")
                except LightningError as exc:
                    self._skip(route, candidate, f"budget: {exc.message}")
                    continue
            reason = candidate.breaker.acquire()
            if reason is not None:
                self._skip(route, candidate, reason)
                continue
            request = route.request
            if remaining is not None:
                request = request.model_copy(update={"timeout_s": remaining})
            seen: list[Attempt] = []
            task = asyncio.create_task(self._attempt(route, candidate, request, seen, hedge))
            running[task] = _Running(candidate, seen, time.monotonic())
            return True
        return False

    async def _attempt(
        self, route: _Route, candidate: _Candidate, request: GenerationRequest, seen: list[Attempt], hedge: bool
    ) -> GenerationResult:
        """One call to one generator, its attempt events routed to the ledger and hooks."""

        def observer(event: AttemptEvent, attempt: Attempt) -> None:
            if event == "start":
                attempt.hedge = hedge
                seen.append(attempt)
                route.attempts.append(attempt)
            self._on_event(event, attempt, candidate)

        started = utcnow()
        with observe_attempts(observer):
            try:
                result = await candidate.generator.agenerate(request)
            except BaseException as exc:
                if not seen:  # a Generator that is not a BaseGenerator reports nothing itself
                    self._synthesize(route, candidate, started, hedge, seen, exc=exc)
                raise
        if not seen:
            self._synthesize(route, candidate, started, hedge, seen, result=result)
        return result

    def _synthesize(
        self,
        route: _Route,
        candidate: _Candidate,
        started: datetime,
        hedge: bool,
        seen: list[Attempt],
        *,
        result: GenerationResult | None = None,
        exc: BaseException | None = None,
    ) -> None:
        attempt = Attempt(
            provider=candidate.generator.name,
            model=result.model if result else None,
            request_id=result.request_id if result else getattr(exc, "request_id", None),
            started_at=started,
            ended_at=utcnow(),
            hedge=hedge,
            seed=route.request.seed,
            steps=route.request.steps,
        )
        if result is not None:
            attempt.outcome, attempt.timings, attempt.cost = "succeeded", result.timings.model_copy(), result.cost
            attempt.num_images = len(result.images)
        elif isinstance(exc, asyncio.CancelledError):
            attempt.outcome = "canceled"
        else:
            unknown = bool(getattr(exc, "outcome_unknown", False)) and attempt.request_id is None
            attempt.outcome, attempt.error_type = ("unknown" if unknown else "failed"), type(exc).__name__
            if unknown:
                attempt.cost = Cost.unknown("create outcome unknown: a job may exist and be billed")
            attempt.error_message = getattr(exc, "message", str(exc))
            attempt.status_code = getattr(exc, "status_code", None)
        seen.append(attempt)
        route.attempts.append(attempt)
        self._on_event("end", attempt, candidate)

    def _settle(self, route: _Route, task: asyncio.Task[GenerationResult], info: _Running) -> GenerationResult | None:
        """Classify a finished attempt; returns the result on success, raises what must not fail over."""
        name = info.candidate.generator.name
        breaker = info.candidate.breaker
        if task.cancelled():
            breaker.release()
            return None
        exc = task.exception()
        if exc is None:
            breaker.record_success()
            return task.result()
        error = (
            exc
            if isinstance(exc, LightningError)
            else ProviderResponseError(f"unexpected {type(exc).__name__}: {exc}", provider=name)
        )
        route.errors.append(error)
        if isinstance(error, InvalidRequestError):
            breaker.release()
            raise error  # the same input fails everywhere: do not fail over
        if isinstance(error, RateLimitError):
            wait = error.retry_after if error.retry_after is not None else 0.0
            if wait:
                breaker.bench(wait)
            else:
                breaker.release()
            remaining = route.remaining()
            if remaining is not None and wait >= remaining:
                self._note(info, f"rate limited for {wait:.1f}s, beyond the {remaining:.1f}s left: failed over")
            elif not getattr(error, "outcome_unknown", False):
                route.not_before[name] = time.monotonic() + wait
                route.retry.append(info.candidate)
            return None
        remaining = route.remaining()
        if isinstance(error, GenerationTimeoutError) and remaining is not None and remaining <= MIN_ATTEMPT_S:
            route.timed_out = True  # it had the rest of the request's deadline
        if isinstance(error, ContentFilteredError):
            breaker.release()
        else:
            breaker.record_failure()
        if getattr(error, "outcome_unknown", False):
            self._note(info, "outcome unknown: the job may exist, so it was not re-sent to this provider")
        elif isinstance(error, AuthenticationError):
            self._note(info, "authentication failed: provider skipped for this request")
        elif error.retryable and not route.timed_out:
            route.retry.append(info.candidate)
        return None

    def _note(self, info: _Running, note: str) -> None:
        for attempt in info.attempts:
            attempt.note = note if not attempt.note else f"{attempt.note}; {note}"
            self.ledger.record("end", attempt)

    async def _cancel(self, running: dict[asyncio.Task[GenerationResult], _Running], note: str, wait: float) -> None:
        """Cancel attempts still running (their generators cancel the remote jobs).

        Waits up to `wait` seconds for them; those still cancelling after that finish in
        the background (`drain()` waits for them).
        """
        tasks = list(running)
        for task in tasks:
            if task.done():  # finished alongside the winner: its own outcome stands
                continue
            for attempt in running[task].attempts:
                attempt.note = note
            task.cancel()
        try:
            if wait > 0 and not all(task.done() for task in tasks):
                # The caller may be cancelled while waiting: that cancellation propagates (after the bookkeeping).
                await asyncio.wait(tasks, timeout=wait)
        finally:
            for task in tasks:
                info = running.pop(task)
                if task.done():
                    self._release(task, info=info)
                    continue
                with self._pending_lock:
                    self._pending.add(task)
                task.add_done_callback(functools.partial(self._release, info=info))

    async def drain(self, timeout: float = ABANDON_WAIT_S) -> None:
        """Wait (up to `timeout`) for cancelled attempts on this loop to finish cancelling remotely."""
        loop = asyncio.get_running_loop()
        with self._pending_lock:
            mine = [t for t in self._pending if t.get_loop() is loop]
        if mine:
            await asyncio.wait(mine, timeout=timeout)

    def _release(self, task: asyncio.Task[GenerationResult], *, info: _Running) -> None:
        with self._pending_lock:
            self._pending.discard(task)
        if not task.cancelled() and task.exception() is None:
            info.candidate.breaker.record_success()
        else:
            info.candidate.breaker.release()


def _union(capabilities: Iterable[Capabilities]) -> Capabilities:
    caps = list(capabilities)
    native = frozenset().union(*(c.native_steps for c in caps))
    formats = frozenset().union(*(c.formats for c in caps))
    return Capabilities(
        native_steps=native,
        emulated_steps=frozenset().union(*(c.emulated_steps for c in caps)) - native,
        min_side=min(c.min_side for c in caps),
        max_side=max(c.max_side for c in caps),
        max_images=max(c.max_images for c in caps),
        max_images_per_call=max(c.max_images_per_call for c in caps),
        formats=formats,
        # A format some generator serves natively is listed there only.
        converted_formats=frozenset().union(*(c.converted_formats for c in caps)) - formats,
        seed=any(c.seed for c in caps),
        negative_prompt=any(c.negative_prompt for c in caps),
        guidance=any(c.guidance for c in caps),
    )


def _sum_costs(costs: Iterable[Cost]) -> Cost:
    total: Cost | None = None
    for cost in costs:
        total = cost if total is None else total + cost
    return total or Cost()
