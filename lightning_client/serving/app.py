"""`create_app`: the FastAPI application serving one generator or router over HTTP.

The app is thin: it parses the OpenAI or native body into a `GenerationRequest`, hands it to
the configured generator (a `Router` does all choosing, retrying and failing over), and maps
results and the error taxonomy back to HTTP. Other routes (a playground, a realtime socket, a
Ray Serve ingress) are added with `create_app(..., routers=[...])` or `app.include_router`;
they reach the shared state with `serving_state(request)` and protect themselves with the
`require_api_key` dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from lightning_client._log import get_logger
from lightning_client.errors import InvalidRequestError, LightningError, ProviderUnavailableError, RateLimitError
from lightning_client.generator import Generator, expected_wait, for_client_request, observe_attempts
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, Cost, GenerationResult, utcnow
from lightning_client.serving.admission import Admission, LeftQueueError, QueueFullError, ShuttingDownError
from lightning_client.serving.body_limit import BodyLimit
from lightning_client.serving.errors import ApiError, error_for, retry_after_header
from lightning_client.serving.files import FileStore, FileTooLargeError
from lightning_client.serving.limits import EffectiveLimits, effective_limits
from lightning_client.serving.metrics import ServerMetrics, StatusClasses
from lightning_client.serving.openai_images import ImagesRequest, images_response
from lightning_client.serving.request_errors import SEND_JSON, validation_answer
from lightning_client.serving.served import Served
from lightning_client.serving.settings import ServerSettings
from lightning_client.serving.sites import HostGuard, base_url
from lightning_client.serving.tracing import TraceContextMiddleware

__all__ = ["EXPECTED_WAIT_HEADER", "ServingState", "create_app", "drain", "require_api_key", "serving_state"]

log = get_logger("lightning_client.serving")

#: Response header with the server's expected wait for the next request, in seconds.
EXPECTED_WAIT_HEADER = "X-Expected-Wait-S"
#: A caller-chosen request id (e.g. `RemoteGenerator`'s) is kept when it looks like this.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ClientDisconnectedError(Exception):
    """The caller went away before its result was ready."""


class Closable(Protocol):
    """A realtime connection the server closes when it shuts down."""

    async def shut_down(self) -> None: ...


@dataclass
class ServingState:
    """What every route shares: what is served, the HTTP settings, the queue, metrics and files."""

    served: Served
    settings: ServerSettings
    admission: Admission
    metrics: ServerMetrics
    files: FileStore
    #: The admission limits in force and where they came from (`serving.limits`).
    limits: EffectiveLimits
    ready: bool = False
    own_generator: bool = True
    #: Generations running now; on shutdown those still running are cancelled and waited for.
    active: set[asyncio.Future[GenerationResult]] = field(default_factory=set, repr=False)
    #: Realtime connections open now; closed (their jobs cancelled) on shutdown.
    sockets: set[Closable] = field(default_factory=set, repr=False)
    _warmup: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def draining(self) -> bool:
        """True once shutdown began: nothing new is admitted."""
        return self.admission.closed

    def expected_wait_s(self) -> float | None:
        """Seconds a request arriving now is expected to wait for its result to start."""
        return self.admission.expected_wait_s(self.served.expected_wait_s())

    def status(self) -> dict[str, Any]:
        breakers = self.served.breakers
        return {
            "ready": self.ready,
            "queue_depth": self.admission.queued,
            "in_flight": self.admission.in_flight,
            "max_queue": self.admission.max_queue,
            "max_concurrency": self.admission.max_concurrency,
            "expected_wait_s": self.expected_wait_s(),
            "mean_service_s": self.admission.service_s,
            "limits": self.limits.describe(),
            "generators": [
                {
                    "name": g.name,
                    "expected_wait_s": expected_wait(g),
                    "breaker": breakers[g.name].state if g.name in breakers else None,
                }
                for g in self.served.generators
            ],
            "capabilities": self.served.capabilities.model_dump(mode="json"),
        }

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """A slot for one realtime job, as an HTTP request gets; refusals are taxonomy errors."""
        try:
            async with self.admission.slot(self.served.expected_wait_s()):
                yield
        except QueueFullError as exc:
            raise RateLimitError(
                f"the server's queue is full ({self.admission.max_queue} waiting); retry later",
                provider="server",
                retryable=True,
                retry_after=exc.expected_wait_s,
            ) from None
        except ShuttingDownError:
            raise ProviderUnavailableError("the server is shutting down", provider="server") from None

    def record_unsent(self, request: GenerationRequest, request_id: str, why: str) -> None:
        """Record a request that ended before any provider call: `canceled`, a known $0."""
        ledger = self.served.ledger
        if ledger is None:
            return
        now = utcnow()
        attempt = Attempt(
            provider=self.served.name,
            model=self.served.model,
            outcome="canceled",
            started_at=now,
            ended_at=now,
            cost=Cost(usd=0.0, basis=f"not sent: {why}", estimated=False),
            seed=request.seed,
            steps=request.steps,
            note=f"request {request_id}: {why}",
        )
        ledger.record("end", attempt)

    async def drain(self, grace_s: float) -> None:
        """Begin shutdown: admit nothing more (queued and new requests get 503), give generations
        in flight `grace_s` to finish, then cancel the rest and close realtime sockets; every
        cancelled attempt cancels its remote job and records its outcome and cost."""
        self.admission.close()
        pending = [task for task in self.active if not task.done()]
        if pending and grace_s > 0:
            await asyncio.wait(pending, timeout=grace_s)
        await self.cancel_active()
        await self.close_sockets()

    async def close_sockets(self) -> None:
        """Close every realtime connection (their jobs are cancelled and recorded)."""
        sockets, self.sockets = list(self.sockets), set()
        await asyncio.gather(*(s.shut_down() for s in sockets), return_exceptions=True)

    async def shut_down(self) -> None:
        """The lifespan's end: cancel what still runs, close the generator, flush and close the ledger."""
        self.admission.close()
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        await self.cancel_active()
        await self.close_sockets()
        ledger = self.served.ledger
        if self.own_generator:
            await self.served.aclose()  # a Router first lets abandoned jobs finish cancelling
        if ledger is not None:
            await asyncio.to_thread(ledger.close if self.own_generator else ledger.flush)

    async def cancel_active(self, timeout_s: float = 10.0) -> None:
        """Cancel generations still running and wait (bounded) while they cancel their remote jobs."""
        pending = [task for task in self.active if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelling %d generation(s) still running at shutdown", len(pending))
            await asyncio.wait(pending, timeout=timeout_s)

    async def warm_up(self) -> None:
        """Load every generator that can preload (`aload`); ready afterwards, or never if loading fails."""
        try:
            await self.served.aload()
        except Exception:
            log.exception("warm-up failed; /readyz stays unready")
            return
        self.ready = True


def serving_state(request: Request) -> ServingState:
    """The `ServingState` of the app serving `request`."""
    state: ServingState = request.app.state.lightning
    return state


def _authorized(settings: ServerSettings, header: str) -> bool:
    scheme, _, token = header.partition(" ")
    given = token.strip().encode()
    matched = False
    for key in settings.api_keys:  # every key compared, in constant time each
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    return scheme.lower() == "bearer" and matched


async def require_api_key(request: Request) -> None:
    """Dependency: a valid `Authorization: Bearer <key>` when the server has keys (else 401)."""
    settings = serving_state(request).settings
    if settings.api_keys and not _authorized(settings, request.headers.get("authorization", "")):
        raise ApiError(
            401,
            "invalid or missing API key: send Authorization: Bearer <key>",
            type="invalid_api_key",
            code="AuthenticationError",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _watching(
    request: Request, work: Awaitable[GenerationResult], watcher: asyncio.Future[Any]
) -> GenerationResult:
    """Run `work`, cancelling it (and its remote jobs) when the client disconnects first (`watcher` ends)."""
    task = asyncio.ensure_future(work)
    state = serving_state(request)
    state.active.add(task)
    task.add_done_callback(state.active.discard)
    try:
        racing: set[asyncio.Future[Any]] = {task, watcher}
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down: cancel the generation, then go
        watcher.cancel()
        task.cancel()
        await asyncio.wait({task})
        raise
    watcher.cancel()
    if task in done:
        if task.cancelled() and state.draining:  # cancelled by the drain: answered 503
            raise ShuttingDownError()
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    raise ClientDisconnectedError()


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


async def _serve(
    request: Request,
    gen_request: GenerationRequest,
    providers: Sequence[str] | None,
    *,
    route: str,
) -> tuple[GenerationResult, dict[str, str]]:
    """Admit, generate (cancelled on disconnect), record metrics; returns the result and response headers."""
    state = serving_state(request)
    providers = state.served.order(providers)
    request_id = _request_id(request)
    metrics = state.metrics
    gone = asyncio.ensure_future(_disconnected(request))
    started = False
    try:
        with observe_attempts(metrics.observe_attempt):
            async with state.admission.slot(state.served.expected_wait_s(), gone=gone) as queued_s:
                started = True
                work = state.served.agenerate(gen_request, providers)
                with for_client_request(request_id):  # the server's ledger rows join the caller's
                    result = await _watching(request, work, gone)
    except QueueFullError as exc:
        metrics.requests.labels(route, "queue_full").inc()
        raise ApiError(
            429,
            f"the server's queue is full ({state.admission.max_queue} waiting); retry later",
            type="rate_limit_error",
            code="RateLimitError",
            retryable=True,
            headers={**retry_after_header(exc.expected_wait_s or 1.0), "X-Request-Id": request_id},
        ) from None
    except LeftQueueError:
        metrics.requests.labels(route, "disconnected").inc()
        state.record_unsent(gen_request, request_id, "the client disconnected while queued")
        log.info("request %s: client disconnected while queued, nothing sent", request_id)
        raise ClientDisconnectedError() from None
    except ClientDisconnectedError:
        metrics.requests.labels(route, "disconnected").inc()
        log.info("request %s: client disconnected, generation cancelled", request_id)
        raise
    except ShuttingDownError:
        metrics.requests.labels(route, "shutting_down").inc()
        if started:
            log.warning("request %s cancelled (server shutting down)", request_id)
        raise ApiError(
            503,
            "the server is shutting down; send the request again",
            type="server_error",
            code="ProviderUnavailableError",
            retryable=True,
            headers={"X-Request-Id": request_id},
        ) from None
    except asyncio.CancelledError:
        metrics.requests.labels(route, "cancelled").inc()
        log.warning("request %s cancelled (server shutting down)", request_id)
        raise
    except LightningError as exc:
        metrics.requests.labels(route, type(exc).__name__).inc()
        raise
    finally:
        gone.cancel()
    metrics.requests.labels(route, "succeeded").inc()
    metrics.observe_result(result, queued_s)
    headers = {"X-Request-Id": request_id}
    wait = state.expected_wait_s()
    if wait is not None:
        headers[EXPECTED_WAIT_HEADER] = f"{wait:.3f}"
    return result, headers


def _check_provider_options(request: GenerationRequest, settings: ServerSettings) -> None:
    """Refuse `provider_options` keys the operator did not allow (`allowed_provider_options`)."""
    allowed = set(settings.allowed_provider_options)
    refused = [
        f"{provider}.{key}"
        for provider, options in request.provider_options.items()
        for key in options
        if f"{provider}.{key}" not in allowed
    ]
    if refused:
        choices = ", ".join(sorted(allowed)) or "none (the operator allows keys with --allow-provider-option)"
        raise InvalidRequestError(
            f"provider_options {', '.join(refused)} not accepted by this server; allowed: {choices}",
            field="provider_options",
        )


def _api_router() -> APIRouter:
    api = APIRouter(dependencies=[Depends(require_api_key)])

    @api.post("/v1/images/generations", summary="OpenAI Images API: generate images")
    async def images_generations(body: ImagesRequest, request: Request) -> JSONResponse:
        try:
            gen_request = body.to_request()
            result, headers = await _serve(request, gen_request, body.providers, route="images")
        except LightningError as exc:
            raise error_for(exc, openai_names=True) from None
        state = serving_state(request)
        base = base_url(request.scope, state.settings)  # never the request's Host

        def store(data: bytes, content_type: str, extension: str) -> str:
            return f"{base}/v1/files/{state.files.put(data, content_type, extension)}"

        try:
            answer = images_response(body, result, store=store)
        except FileTooLargeError as exc:
            raise ApiError(507, str(exc), type="server_error", code="FileTooLarge") from None
        return JSONResponse(answer, headers=headers)

    @api.post("/v1/generations", summary="Native API: a GenerationRequest in, a GenerationResult out")
    async def generations(
        request: Request,
        body: dict[str, Any] = Body(  # noqa: B008 - FastAPI's way to declare a body
            ...,
            description="GenerationRequest fields, plus optional `providers` (an explicit order of generator names).",
        ),
    ) -> Response:
        fields = dict(body)
        providers = fields.pop("providers", None)
        if providers is not None and not (isinstance(providers, list) and all(isinstance(p, str) for p in providers)):
            raise InvalidRequestError("providers must be a list of generator names", field="providers")
        gen_request = GenerationRequest(**fields)
        _check_provider_options(gen_request, serving_state(request).settings)
        result, headers = await _serve(request, gen_request, providers, route="generations")
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)

    @api.get("/v1/capabilities", summary="What the served generator can do")
    async def capabilities(request: Request) -> dict[str, Any]:
        served = serving_state(request).served
        return {
            "name": served.name,
            "generators": [g.name for g in served.generators],
            "capabilities": served.capabilities.model_dump(mode="json"),
        }

    @api.get("/v1/status", summary="Queue depth, in flight, expected waits and breaker states")
    async def status(request: Request) -> dict[str, Any]:
        return serving_state(request).status()

    @api.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(serving_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return api


def _open_router() -> APIRouter:
    """Routes without auth: probes, and stored images behind unguessable ids."""
    public = APIRouter()

    @public.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @public.get("/readyz", summary="Readiness: the generator is warm")
    async def readyz(request: Request) -> JSONResponse:
        ready = serving_state(request).ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @public.get("/v1/files/{file_id}", summary="An image answered as `url` (kept for the server's retention)")
    async def files(file_id: str, request: Request) -> Response:
        stored = serving_state(request).files.get(file_id)
        if stored is None:
            raise ApiError(404, f"no file {file_id!r} (unknown or expired)", type="not_found", code="NotFound")
        return Response(stored.data, media_type=stored.content_type)

    return public


def _error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def lightning_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LightningError)
        return error_for(exc).response()

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_answer(exc, request.headers.get("content-type")).response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and request.method == "POST":  # FastAPI could not decode the body at all
            return ApiError(
                400,
                f"the body is not UTF-8 JSON: {SEND_JSON}",
                type="invalid_request_error",
                code="InvalidRequestError",
            ).response()
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), type=kind, code=f"HTTP{exc.status_code}").response()

    async def disconnected(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(LightningError, lightning_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnectedError, disconnected)


def _guards(app: FastAPI, settings: ServerSettings) -> None:
    """Checks that run before routing, outermost first: the keyless Host rule, then the body limit."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostGuard, settings=settings)  # added last: runs first


def create_app(
    generator: Generator,
    *,
    settings: ServerSettings | None = None,
    routers: Sequence[APIRouter] = (),
    own_generator: bool = True,
    title: str = "lightning-client server",
) -> FastAPI:
    """A FastAPI app serving `generator` (one backend or a `Router`).

    Args:
        generator: what serves every request; with a `Router`, `providers` in a body sets its order.
        settings: auth keys, queue bounds, grace and file retention (`ServerSettings()` by default).
        routers: more `APIRouter`s to include (after the built-in routes).
        own_generator: close `generator` when the app shuts down.
    """
    config = settings or ServerSettings()
    served = Served(generator)
    limits = effective_limits(served, config)
    state = ServingState(
        served=served,
        settings=config,
        admission=Admission(limits.max_concurrency.value, limits.max_queue.value),
        metrics=ServerMetrics(),
        files=FileStore(config.file_retention_s, config.max_files, config.max_file_bytes),
        limits=limits,
        own_generator=own_generator,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.warmup:
            state._warmup = asyncio.create_task(state.warm_up())
        else:
            state.ready = True
        try:
            yield
        finally:
            await state.shut_down()

    state.metrics.watch(served.batching)
    state.metrics.queue_depth.set_function(lambda: state.admission.queued)
    state.metrics.in_flight.set_function(lambda: state.admission.in_flight)
    docs = "/docs" if config.docs else None  # its page loads scripts from a CDN: off unless asked for
    app = FastAPI(title=title, version=_version(), lifespan=lifespan, docs_url=docs, redoc_url=None)
    app.state.lightning = state
    _guards(app, config)
    app.add_middleware(TraceContextMiddleware)
    # Added last, so outermost: it also counts the guards' refusals (400, 403, 413).
    app.add_middleware(StatusClasses, metrics=state.metrics)
    _error_handlers(app)
    app.include_router(_api_router())
    app.include_router(_open_router())
    for extra in routers:
        app.include_router(extra)
    return app


async def drain(app: Any, grace_s: float) -> None:
    """Begin shutting down an app made by `create_app` (see `ServingState.drain`); others are left alone."""
    state = getattr(getattr(app, "state", None), "lightning", None)
    if isinstance(state, ServingState):
        await state.drain(grace_s)


def _version() -> str:
    from lightning_client._version import __version__

    return __version__
