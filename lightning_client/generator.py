"""The `Generator` protocol, `Capabilities`, and the base class providers build on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, field_serializer
from typing_extensions import Self

from lightning_client import telemetry
from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger
from lightning_client._sync import run_sync
from lightning_client.errors import (
    ConfigurationError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
)
from lightning_client.pricing import PriceTable
from lightning_client.request import GenerationRequest, fit_aspect_ratio
from lightning_client.result import (
    Attempt,
    Cost,
    GeneratedImage,
    GenerationResult,
    GenerationWarning,
    Timings,
    WarningKind,
    utcnow,
)

if TYPE_CHECKING:
    from lightning_client.realtime_contract import RealtimeSessionLike
    from lightning_client.sandbox_endpoints import SandboxEndpoints

__all__ = [
    "AttemptContext",
    "AttemptEvent",
    "AttemptRecorder",
    "BaseGenerator",
    "Capabilities",
    "ClosingContext",
    "Generator",
    "LightningDeprecationWarning",
    "ProviderOption",
    "RealtimeOpener",
    "for_client_request",
    "install_realtime",
    "observe_attempts",
    "open_realtime",
]

logger = get_logger("lightning_client.generator")


class Capabilities(BaseModel):
    """What a generator can serve, so a router can choose before sending anything."""

    model_config = ConfigDict(frozen=True)

    native_steps: frozenset[int] = frozenset({1, 2, 4, 8})
    emulated_steps: frozenset[int] = frozenset()
    min_side: int = 64
    max_side: int = 4096
    max_images: int = 8
    max_images_per_call: int = 8
    formats: frozenset[str] = frozenset({"png", "jpeg", "webp"})
    converted_formats: frozenset[str] = frozenset()
    seed: bool = True
    negative_prompt: bool = False
    guidance: bool = False

    @field_serializer("native_steps", "emulated_steps", "formats", "converted_formats", when_used="json")
    def _sorted(self, values: frozenset[Any]) -> list[Any]:
        """Sets as sorted lists in JSON (e.g. /v1/capabilities), so every listing reads the same."""
        return sorted(values)

    @property
    def steps(self) -> frozenset[int]:
        """Every step count served, natively or emulated."""
        return self.native_steps | self.emulated_steps

    def problems(self, request: GenerationRequest) -> list[str]:
        """Reasons this generator cannot serve `request` (empty when it can)."""
        reasons: list[str] = []
        if request.steps not in self.steps:
            reasons.append(f"steps={request.steps} not supported (supported: {sorted(self.steps)})")
        elif request.steps not in self.native_steps and not request.allow_emulation:
            reasons.append(
                f"steps={request.steps} only emulated (native: {sorted(self.native_steps)}) and allow_emulation=False"
            )
        if request.aspect_ratio is not None:
            if self.size_for(request) is None:
                reasons.append(
                    f"aspect_ratio={request.aspect_ratio!r}: no size with this ratio within {self.min_side}..{self.max_side}"
                )
        else:
            for side, value in (("width", request.width), ("height", request.height)):
                if not self.min_side <= value <= self.max_side:
                    reasons.append(f"{side}={value} outside {self.min_side}..{self.max_side}")
        if request.num_images > self.max_images:
            reasons.append(f"num_images={request.num_images} above {self.max_images}")
        if request.output_format not in self.formats | self.converted_formats:
            reasons.append(f"output_format={request.output_format!r} not available")
        return reasons

    def size_for(self, request: GenerationRequest) -> tuple[int, int] | None:
        """The size this generator serves `request` at (None: it cannot).

        Explicit sizes are served as given (or refused by `problems`); an aspect ratio is size
        intent: its SDXL bucket when that fits, else the nearest size within these limits
        with the same ratio (`fit_aspect_ratio`).
        """
        if request.aspect_ratio is None:
            return request.size
        return fit_aspect_ratio(request.aspect_ratio, self.min_side, self.max_side)

    def warnings(self, request: GenerationRequest, provider: str) -> list[GenerationWarning]:
        """Typed warnings for settings this generator serves only approximately."""
        found: list[GenerationWarning] = []

        def warn(kind: WarningKind, setting: str, message: str) -> None:
            found.append(GenerationWarning(kind=kind, setting=setting, message=message, provider=provider))

        if request.steps not in self.native_steps and request.steps in self.emulated_steps:
            warn(
                "emulated",
                "steps",
                f"the model's native step counts are {sorted(self.native_steps)}; "
                f"running {request.steps} steps on it is not the matching SDXL-Lightning checkpoint",
            )
        if request.negative_prompt:
            if not self.negative_prompt:
                warn(
                    "unsupported", "negative_prompt", "this provider does not accept a negative prompt; it was not sent"
                )
            elif request.guidance_scale <= 1:
                warn("ignored", "negative_prompt", "has no effect at guidance_scale <= 1 (CFG is off)")
        if request.guidance_scale and not self.guidance:
            warn("unsupported", "guidance_scale", "this provider does not accept guidance_scale; it was not sent")
        if request.output_format in self.converted_formats and request.output_format not in self.formats:
            warn(
                "converted", "output_format", f"{request.output_format} is converted locally from the provider's output"
            )
        return found


AttemptEvent = Literal["start", "job", "end", "update"]
AttemptObserver = Callable[[AttemptEvent, Attempt], None]


class AttemptRecorder(Protocol):
    """What keeps a record of attempts (a `Ledger`): `record` is an `observe_attempts` callback."""

    def record(self, event: AttemptEvent, attempt: Attempt) -> None: ...


_observers: ContextVar[tuple[AttemptObserver, ...]] = ContextVar("lightning_client_attempt_observers", default=())


@contextlib.contextmanager
def observe_attempts(observer: AttemptObserver) -> Iterator[None]:
    """Call `observer(event, attempt)` for attempts made in this context.

    Events: "start" (before sending), "job" (a remote job id is known), "end" (done,
    with outcome, timings and cost), "update" (after its end, a late remote job was
    found and dealt with: its id and cost were added). Used by the router and ledger;
    safe across tasks.
    """
    token = _observers.set((*_observers.get(), observer))
    try:
        yield
    finally:
        _observers.reset(token)


_client_request: ContextVar[str | None] = ContextVar("lightning_client_client_request", default=None)


@contextlib.contextmanager
def for_client_request(request_id: str | None) -> Iterator[None]:
    """Record `request_id` (a server's caller's `X-Request-Id`) on attempts made in this context."""
    token = _client_request.set(request_id)
    try:
        yield
    finally:
        _client_request.reset(token)


def _notify(event: AttemptEvent, attempt: Attempt) -> None:
    for observer in _observers.get():
        try:
            observer(event, attempt)
        except Exception:  # an observer must never break a generation
            logger.exception("attempt observer failed on %s", event)


class AttemptContext:
    """Per-call helper handed to a provider: records remote ids, warnings and the deadline."""

    def __init__(self, generator: BaseGenerator, request: GenerationRequest) -> None:
        self.request = request
        self.provider = generator.name
        self.started = time.monotonic()
        self.deadline = None if request.timeout_s is None else self.started + request.timeout_s
        self.warnings: list[GenerationWarning] = generator.capabilities.warnings(request, generator.name)
        self.attempt = Attempt(
            provider=generator.name,
            model=generator.model,
            seed=request.seed,
            steps=request.steps,
            client_request_id=_client_request.get(),
        )
        self.cost = Cost()
        #: Creates sent again in place because the first created nothing (refused, or provably absent).
        self.creates_resent = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def job_started(self, remote_id: str) -> None:
        """Record a remote job id as soon as it is known (before waiting on it)."""
        self.attempt.remote_ids.append(remote_id)
        if self.attempt.request_id is None:
            self.attempt.request_id = remote_id
        _notify("job", self.attempt)

    def warn(self, kind: WarningKind, setting: str, message: str) -> None:
        self.warnings.append(GenerationWarning(kind=kind, setting=setting, message=message, provider=self.provider))

    def add_cost(self, cost: Cost) -> None:
        """Add what a (possibly abandoned) remote job cost to this attempt."""
        self.cost = self.cost + cost if self.cost.recorded else cost

    def late_job(self, remote_id: str, cost: Cost) -> None:
        """A job created after this attempt was abandoned (its create answered late) was dealt with.

        Its id and cost join the attempt's record, which is sent again as an "update" once the
        attempt has ended (or as a "job" while it still runs), so the ledger has both.
        """
        attempt = self.attempt
        if remote_id not in attempt.remote_ids:
            attempt.remote_ids.append(remote_id)
        if attempt.request_id is None:
            attempt.request_id = remote_id
        if attempt.outcome == "unknown":
            # The job the unknown outcome stood for is known now: its cost replaces the unknown one.
            self.cost = cost
            attempt.outcome = "failed"
        else:
            self.add_cost(cost)
        if attempt.ended_at is None:
            _notify("job", attempt)
            return
        attempt.cost = self.cost
        attempt.note = (attempt.note + "; " if attempt.note else "") + f"job {remote_id} was created late and cancelled"
        _notify("update", attempt)

    def read_retried(self) -> None:
        """Count one read (status, stream, result, download) retried in place."""
        self.attempt.read_retries += 1

    def create_resent(self) -> None:
        """Count one create sent again in place because the previous one created nothing."""
        self.creates_resent += 1

    def result(
        self,
        images: Sequence[GeneratedImage],
        *,
        model: str,
        seed: int | None = None,
        timings: Timings | None = None,
        cost: Cost | None = None,
    ) -> GenerationResult:
        """Assemble the result; the base class fills total_s and the attempt."""
        if cost is not None:
            self.add_cost(cost)
        return GenerationResult(
            images=list(images),
            seed=self.request.seed if seed is None else seed,
            provider=self.provider,
            model=model,
            prompt=self.request.prompt,
            steps=self.request.steps,
            request_id=self.attempt.request_id,
            timings=timings or Timings(),
            cost=self.cost,
            warnings=list(self.warnings),
        )


@runtime_checkable
class Generator(Protocol):
    """Anything that turns a `GenerationRequest` into a `GenerationResult`."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def agenerate(self, request: GenerationRequest) -> GenerationResult: ...

    def generate(self, request: GenerationRequest) -> GenerationResult: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class RealtimeOpener(Protocol):
    """Opens a realtime session on a generator (for a router, over `providers`, in order)."""

    def __call__(
        self,
        generator: Generator,
        *,
        throttle_s: float,
        ledger: AttemptRecorder | None,
        providers: Sequence[str] | None,
    ) -> RealtimeSessionLike: ...


#: The opener `open_realtime` calls; installed by the package (`lightning_client/__init__.py`), the
#: composition root, so this layer never imports the realtime sessions above it.
_realtime_opener: RealtimeOpener | None = None


def install_realtime(opener: RealtimeOpener) -> None:
    """Make `opener` what `BaseGenerator.realtime()` and `Router.realtime()` open sessions with."""
    global _realtime_opener
    _realtime_opener = opener


def open_realtime(
    generator: Generator,
    *,
    throttle_s: float,
    ledger: AttemptRecorder | None = None,
    providers: Sequence[str] | None = None,
) -> RealtimeSessionLike:
    """A realtime session on `generator`; a router's moves across its generators (`providers`: which ones)."""
    if _realtime_opener is None:  # pragma: no cover - `import lightning_client` installs it first
        raise RuntimeError("no realtime opener installed; import lightning_client first")
    return _realtime_opener(generator, throttle_s=throttle_s, ledger=ledger, providers=providers)


def expected_wait(generator: Generator) -> float | None:
    """The generator's `expected_wait_s()`; None when it has none or the probe fails (logged)."""
    probe = getattr(generator, "expected_wait_s", None)
    if not callable(probe):
        return None
    try:
        value = probe()
    except Exception:  # a faulty probe must not fail a request or a status page; it counts as unknown
        logger.exception("%s.expected_wait_s() failed", getattr(generator, "name", generator))
        return None
    return float(value) if isinstance(value, (int, float)) else None


def as_request(request: GenerationRequest | str | None, fields: dict[str, Any]) -> GenerationRequest:
    """Accept a request, a bare prompt, or keyword fields (which override the request's)."""
    if isinstance(request, GenerationRequest):
        if fields:
            base = request.model_dump()
            if "aspect_ratio" in fields:  # a new ratio replaces the size the old one resolved to
                base.pop("width")
                base.pop("height")
            elif {"width", "height"} & fields.keys():  # an explicit size replaces the ratio
                base.pop("aspect_ratio")
            return GenerationRequest.model_validate({**base, **fields})
        return request
    if isinstance(request, str):
        return GenerationRequest(prompt=request, **fields)
    if request is None:
        return GenerationRequest(**fields)
    raise InvalidRequestError(
        f"request must be a GenerationRequest or a prompt string, not {type(request).__name__}", field="request"
    )


def _sized(capabilities: Capabilities, request: GenerationRequest) -> GenerationRequest:
    """`request` at the size `capabilities` serve it at: an explicit-size copy when an aspect ratio was fitted."""
    size = capabilities.size_for(request)
    if size is None or size == request.size:
        return request
    return request.model_copy(update={"width": size[0], "height": size[1], "aspect_ratio": None})


class ClosingContext:
    """`with` / `async with` support for anything with `close()` and `aclose()`."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass(frozen=True)
class ProviderOption:
    """One constructor option a provider offers to command-line tools and documents.

    `name` is the keyword argument; `env` the environment variable read when it is not given.
    """

    name: str
    help: str
    type: type = str
    choices: tuple[str, ...] = ()
    env: str | None = None


class LightningDeprecationWarning(DeprecationWarning):
    """A deprecated spelling of this package's own API (an old argument name, positional arguments)."""


def env_setting(variable: str) -> str | None:
    """A non-empty environment variable, stripped (None when unset or blank)."""
    value = os.environ.get(variable, "").strip()
    return value or None


class BaseGenerator(ClosingContext, ABC):
    """Shared lifecycle for every backend: validation, deadline, attempt record, sync API.

    Subclasses implement `_generate(ctx)` making exactly one attempt, and raise only
    `LightningError`s. Cancelling the awaiting task (or the deadline) must cancel
    any remote job the subclass started; the base class turns the deadline into
    `GenerationTimeoutError`.

    What is specific to a provider is declared on its class, never branched on by name
    elsewhere: its registry `kind`, the priors a router starts from (`latency_prior_s`,
    `prior_cost_per_image`), its credential variables (`credential_env`), the options it
    offers (`options`) and how to point it at a sandbox (`for_sandbox`).
    """

    #: The registry kind; `name` (what routers, ledgers and reports show) defaults to it.
    kind: ClassVar[str] = "generator"
    name: str = "generator"
    model: str = ""
    #: Total seconds for one 1024x1024 4-step image assumed before anything is observed (None: unknown).
    latency_prior_s: ClassVar[float | None] = None
    #: Environment variables holding the credential, in lookup order (empty: none needed).
    credential_env: ClassVar[tuple[str, ...]] = ()
    #: Whether the provider sandbox emulates this provider (`for_sandbox` works).
    sandboxed: ClassVar[bool] = False
    #: Constructor options offered to command-line tools.
    options: ClassVar[tuple[ProviderOption, ...]] = ()
    #: The command-line flag for a folder of weights this provider loads from disk (None: it takes none).
    folder_flag: ClassVar[str | None] = None
    #: What that folder holds, for the flag's help.
    folder_help: ClassVar[str] = ""

    @classmethod
    def _check_name(cls, name: str | None) -> str:
        """`name`, or the kind when None; a blank name is an error."""
        if name is None:
            return cls.kind
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("name must be a non-empty string", path="name", provider=cls.kind)
        return name.strip()

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        """Expected dollars per image from prices alone, before any cost is observed (None: unknown)."""
        return None

    @classmethod
    def has_credentials(cls) -> bool:
        """Whether the environment holds what this provider needs to authenticate."""
        return not cls.credential_env or any(env_setting(v) for v in cls.credential_env)

    @classmethod
    def credential_hint(cls) -> str:
        """The variables to set for credentials, for error messages ("" when none are needed)."""
        return " or ".join(cls.credential_env)

    @classmethod
    def folder_options(cls, folder: Path) -> dict[str, Any]:
        """Constructor options for the weights in `folder` (providers with a `folder_flag`)."""
        raise ConfigurationError(f"provider {cls.kind!r} loads no weights from a folder", path="folder")

    @classmethod
    def for_sandbox(cls, sandbox: SandboxEndpoints, **options: Any) -> BaseGenerator:
        """A generator pointed at a provider sandbox, with the sandbox's test credentials."""
        raise ConfigurationError(f"the sandbox does not emulate provider {cls.kind!r}", path="sandbox")

    @classmethod
    def sandbox_environment(cls, sandbox: SandboxEndpoints) -> Mapping[str, str]:
        """Environment variables that point a default-constructed generator at `sandbox`."""
        return {}

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    async def _generate(self, ctx: AttemptContext) -> GenerationResult: ...

    def expected_wait_s(self) -> float | None:
        """Seconds a request sent now would wait before this generator starts on it; None when unknown.

        Sync, cheap and never blocking: `Router(max_wait_s=...)` reads it to skip a busy
        generator. Generators whose figure needs I/O refresh it in `refresh_expected_wait`.
        """
        return None

    async def refresh_expected_wait(self) -> None:
        """Bring `expected_wait_s()` and `capabilities` up to date when that needs I/O (override).

        The router awaits it for a bounded time before choosing; keep it cheap when fresh.
        """

    def _admission(self, ctx: AttemptContext) -> contextlib.AbstractAsyncContextManager[object]:
        """What an attempt waits for before it starts, within its deadline (override: a rate limit)."""
        return contextlib.nullcontext()

    async def _admitted(self, ctx: AttemptContext) -> GenerationResult:
        async with self._admission(ctx):
            return await self._generate(ctx)

    async def _close(self) -> None:
        """Release resources bound to the running loop (override)."""

    def _close_all(self) -> None:
        """Release every resource from synchronous code (override)."""

    async def agenerate(self, request: GenerationRequest | str | None = None, **fields: Any) -> GenerationResult:
        """Generate images for `request` (or a prompt plus request fields)."""
        req = as_request(request, fields)
        with telemetry.generation_span(self.name, self.model, req) as span:
            result = await self._checked(req)
            if span is not None:
                span.finish(result)
        return result

    async def _checked(self, req: GenerationRequest) -> GenerationResult:
        """Refuse what the capabilities rule out, size the request, then make the attempt."""
        problems = self.capabilities.problems(req)
        if problems:
            raise InvalidRequestError(
                f"{self.name} cannot serve this request: " + "; ".join(problems),
                provider=self.name,
                field=problems[0].split("=", 1)[0].split(":", 1)[0],
            )
        asked = req
        req = _sized(self.capabilities, req)
        ctx = AttemptContext(self, req)
        if req is not asked:
            ctx.warn(
                "resized",
                "aspect_ratio",
                f"aspect_ratio={asked.aspect_ratio!r} resolves to {asked.width}x{asked.height}, outside this "
                f"provider's {self.capabilities.min_side}..{self.capabilities.max_side}; served at "
                f"{req.width}x{req.height}, the nearest size it supports with that ratio",
            )
        with telemetry.attempt_span(ctx.attempt, req):
            return await self._attempt(ctx)

    async def _attempt(self, ctx: AttemptContext) -> GenerationResult:
        """The one attempt: events, deadline, error classification and the attempt record."""
        req = ctx.request
        _notify("start", ctx.attempt)
        try:
            if ctx.deadline is None:
                result = await self._admitted(ctx)
            else:
                try:
                    async with async_timeout(req.timeout_s):
                        result = await self._admitted(ctx)
                except TIMEOUT_ERRORS:
                    raise GenerationTimeoutError(
                        f"no result within timeout_s={req.timeout_s}",
                        provider=self.name,
                        request_id=ctx.attempt.request_id,
                    ) from None
        except asyncio.CancelledError:
            self._finish(ctx, "canceled", None)
            raise
        except LightningError as exc:
            if exc.provider is None:
                exc.provider = self.name
            if exc.request_id is None:
                exc.request_id = ctx.attempt.request_id
            if exc.outcome_unknown and (exc.request_id is None or ctx.cost.is_unknown):
                # A create may have made a job nobody can name or settle: it may run and be billed.
                if not ctx.cost.recorded:
                    ctx.add_cost(Cost.unknown("create outcome unknown: a job may exist and be billed"))
                self._finish(ctx, "unknown", exc)
            else:
                self._finish(ctx, "failed", exc)
            exc.attempt = ctx.attempt
            raise
        except Exception as exc:  # a bug or an unexpected library error: still classified
            logger.exception("%s: unexpected error", self.name)
            err = ProviderResponseError(
                f"unexpected {type(exc).__name__}: {exc}", provider=self.name, request_id=ctx.attempt.request_id
            )
            self._finish(ctx, "failed", err)
            err.attempt = ctx.attempt
            raise err from exc
        result.timings.total_s = time.monotonic() - ctx.started
        self._finish(ctx, "succeeded", None, result)
        result.attempts = [ctx.attempt.snapshot()]
        return result

    def _finish(
        self,
        ctx: AttemptContext,
        outcome: Literal["succeeded", "failed", "canceled", "unknown"],
        error: LightningError | None,
        result: GenerationResult | None = None,
    ) -> None:
        attempt = ctx.attempt
        attempt.outcome = outcome
        attempt.ended_at = utcnow()
        attempt.cost = ctx.cost
        if ctx.creates_resent:
            resent = f"create sent again {ctx.creates_resent} time(s): the earlier one created nothing"
            attempt.note = f"{attempt.note}; {resent}" if attempt.note else resent
        if result is not None:
            attempt.timings = result.timings.model_copy()
            attempt.num_images = len(result.images)
            attempt.seed = result.seed
        else:
            attempt.timings.total_s = time.monotonic() - ctx.started
        if error is not None:
            attempt.error_type = type(error).__name__
            attempt.error_message = error.message
            attempt.status_code = error.status_code
            attempt.retryable = error.retryable
        _notify("end", attempt)

    def generate(self, request: GenerationRequest | str | None = None, **fields: Any) -> GenerationResult:
        """Synchronous `agenerate`; works in plain scripts and inside a running loop (Jupyter)."""
        return run_sync(self.agenerate(request, **fields))

    def realtime(self, *, throttle_s: float = 0.1, ledger: AttemptRecorder | None = None) -> RealtimeSessionLike:
        """A latest-wins realtime session on this generator (`async with`, or `with` in scripts)."""
        return open_realtime(self, throttle_s=throttle_s, ledger=ledger)

    async def aclose(self) -> None:
        """Close what this generator holds on the running loop."""
        await self._close()

    def close(self) -> None:
        """Close everything this generator holds, from synchronous code."""
        self._close_all()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r})"
