"""`FalGenerator`: fal-ai/fast-lightning-sdxl over fal's queue HTTP API, waiting on the SSE status stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse
from pydantic import SecretStr

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger
from lightning_client.credentials import secret_from
from lightning_client.errors import (
    AuthenticationError,
    GenerationTimeoutError,
    LightningError,
)
from lightning_client.images import DecodedImage, convert_image
from lightning_client.pricing import PriceTable
from lightning_client.providers._http import (
    AttemptContext,
    Capabilities,
    ErrorHints,
    HttpGenerator,
    PollDelays,
    ProviderOption,
    auth_header,
    env_setting,
    error_from_response,
    expired,
    gather_all,
    hosted_arguments,
    parse_json,
    send,
    shielded,
    transport_error,
)
from lightning_client.providers.fal import wire
from lightning_client.providers.fal.pricing import PRICING_WAIT_S, FalPricing
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GeneratedImage, GenerationResult, Timings
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.state.jobs import RecoveredJob

if TYPE_CHECKING:
    from lightning_client.realtime_backend import RealtimeBackend

__all__ = ["DEFAULT_APP", "DEFAULT_QUEUE_URL", "SANDBOX_KEY", "FalGenerator", "fal_key"]

log = get_logger("lightning_client.providers.fal")

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_REST_URL = "https://api.fal.ai"
DEFAULT_APP = "fal-ai/fast-lightning-sdxl"
#: The key the sandbox accepts; not a secret.
SANDBOX_KEY = "sandbox:key"

#: Longest wait for a request without a deadline.
MAX_JOB_S = 30 * 60.0
#: Longest wait for a status stream to end after its COMPLETED event.
_STREAM_DRAIN_S = 0.2
_DRAIN_ERRORS: tuple[type[BaseException], ...] = (*TIMEOUT_ERRORS, httpx.HTTPError, SSEError)


@dataclass
class _Job:
    """What we know of one queued request while following it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    submitted: float
    status: str = "IN_QUEUE"
    in_progress_at: float | None = None
    completed: dict[str, Any] = field(default_factory=dict)


class FalGenerator(HttpGenerator):
    """SDXL-Lightning on fal.ai (`fal-ai/fast-lightning-sdxl` by default), through the queue API.

    One call makes one attempt: a queue submission with `X-Fal-Request-Timeout` from
    the deadline, followed on the SSE status stream (falling back to adaptive polling),
    then the result and its images; cancelled remotely when abandoned; priced from
    `x-fal-billable-units` x the unit price from fal's pricing API (or the price table).

    Args:
        api_key: fal key (`key_id:key_secret`); default: FAL_KEY, else FAL_KEY_ID + FAL_KEY_SECRET.
            Surrounding whitespace is stripped; a key with whitespace inside is an error.
        base_url: queue API root; default: FAL_QUEUE_URL, else https://queue.fal.run.
        model: endpoint id (`owner/app[/path]`), default `fal-ai/fast-lightning-sdxl`.
        name: what routers, ledgers and reports call this generator (default "fal").
        run_url: synchronous-run root, used by `mode="run"`; default: FAL_RUN_URL, else https://fal.run.
        rest_url: platform API root, for the pricing lookup; default: FAL_REST_URL, else https://api.fal.ai.
        prices: fallback prices when the pricing API is unreachable (default `DEFAULT_PRICES`).
        use_sse: wait on the status stream (else poll).
        mode: "queue" (default: remote id known at once, cancellable) or "run" (one POST to
            `run_url`; no remote id until it returns, and abandoning it only disconnects).
        timeout: seconds (or an `httpx.Timeout`) for each HTTP exchange, not the whole job.
        max_connections: connection pool size per event loop.
        poll_initial_s / poll_max_s: adaptive polling starts at the first and backs off to the second.
        cancel_timeout_s: how long a best-effort remote cancel may take.
        webhook: a URL fal POSTs the result to when the request completes (`?fal_webhook=`; queue
            mode only); the generator still waits for the result itself.
        webhook_events: fal sends one event, on completion: None or ["completed"].
        key, queue_url, app: deprecated spellings of `api_key`, `base_url` and `model`; positional
            arguments (key, queue_url, app) are deprecated too.

    fal-client fixes its hosts at import time and always uses https (`FAL_RUN_HOST`,
    `FAL_QUEUE_RUN_HOST`); the URL variables above take a scheme, so they can name a
    plain-http sandbox on loopback.
    """

    #: fal names error types in `X-Fal-Error-Type` and the body, flags retryability in
    #: `X-Fal-Retryable` (older answers: `X-Fal-Needs-Retry`), and marks deadline 504s; "could not
    #: schedule a runner" refuses a submit (nothing is queued).
    error_hints = ErrorHints(
        type_headers=("x-fal-error-type",),
        refused_types=frozenset({"runner_scheduling_failure"}),
        filtered_types=wire.FILTERED_TYPES,
        timeout_types=wire.TIMEOUT_TYPES,
        timeout_headers=("x-fal-request-timeout-type",),
        retryable_headers=("x-fal-retryable", "x-fal-needs-retry"),
    )

    kind = "fal"
    name = "fal"
    _log = log
    #: fal publishes no latency for this endpoint: an assumption (docs/costs.md).
    latency_prior_s = 1.5
    credential_env = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")
    #: Variables read for the hosts when the arguments are not given.
    BASE_URL_ENV = "FAL_QUEUE_URL"
    RUN_URL_ENV = "FAL_RUN_URL"
    REST_URL_ENV = "FAL_REST_URL"
    sandboxed = True
    options = (
        ProviderOption("model", "Endpoint id, owner/app[/path]."),
        ProviderOption("base_url", "Queue API root.", env="FAL_QUEUE_URL"),
        ProviderOption("mode", "queue (cancellable) or run (one synchronous POST).", choices=("queue", "run")),
    )

    def __init__(
        self,
        *legacy: Any,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        model: str | None = None,
        name: str | None = None,
        run_url: str | None = None,
        rest_url: str | None = None,
        prices: PriceTable | None = None,
        use_sse: bool = True,
        mode: Literal["queue", "run"] = "queue",
        timeout: float | httpx.Timeout = 30.0,
        max_connections: int = 64,
        poll_initial_s: float = 0.05,
        poll_max_s: float = 1.0,
        cancel_timeout_s: float = 5.0,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        key: str | SecretStr | None = None,
        queue_url: str | None = None,
        app: str | None = None,
    ) -> None:
        api_key, base_url, model = hosted_arguments(
            "FalGenerator",
            legacy,
            api_key=api_key,
            base_url=base_url,
            model=model,
            renamed={"key": ("api_key", key), "queue_url": ("base_url", queue_url), "app": ("model", app)},
        )
        model = model or DEFAULT_APP
        if mode not in ("queue", "run"):
            raise ValueError(f"mode must be 'queue' or 'run', got {mode!r}")
        self.webhook = _webhook(webhook, webhook_events, mode)
        if model.count("/") < 1:
            raise ValueError(f"model must be an endpoint id like 'owner/app[/path]', got {model!r}")
        super().__init__(
            model=model,
            name=name,
            prices=prices,
            timeout=timeout,
            max_connections=max_connections,
            poll_initial_s=poll_initial_s,
            poll_max_s=poll_max_s,
            cancel_timeout_s=cancel_timeout_s,
        )
        self.app = model
        self.base_url = self.queue_url = (base_url or env_setting(self.BASE_URL_ENV) or DEFAULT_QUEUE_URL).rstrip("/")
        self.run_url = (run_url or env_setting(self.RUN_URL_ENV) or DEFAULT_RUN_URL).rstrip("/")
        self.rest_url = (rest_url or env_setting(self.REST_URL_ENV) or DEFAULT_REST_URL).rstrip("/")
        self.use_sse = use_sse
        self.mode = mode
        self._key = self._credential(api_key)
        # Status, result and cancel URLs use only owner/app (no sub-path); used when a submit omits them.
        self._requests_root = f"{self.queue_url}/{'/'.join(model.split('/')[:2])}/requests"
        #: The endpoint's unit price (fal's pricing API, else the price table) and the cost of its jobs.
        self.pricing = FalPricing(
            provider=self.name, app=model, rest_url=self.rest_url, prices=self.prices, hints=self.error_hints
        )
        self._capabilities = Capabilities(
            native_steps=frozenset({1, 2, 4, 8}),
            # fal's toolkit accepts sides up to 14142; the hosted app's own limit is not documented,
            # so we stay within sizes SDXL handles well.
            min_side=256,
            max_side=2048,
            max_images=8,
            max_images_per_call=8,
            formats=frozenset({"png", "jpeg"}),
            converted_formats=frozenset({"webp"}),
            seed=True,
            negative_prompt=False,
            guidance=False,
        )

    @classmethod
    def _credential(cls, value: str | SecretStr | None = None) -> SecretStr | None:
        """The argument, else FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (fal-client's order)."""
        found = secret_from(value, argument="api_key", env=("FAL_KEY",), provider=cls.kind)
        if found is not None or value is not None:
            return found
        key_id = secret_from(None, argument="", env=("FAL_KEY_ID",), provider=cls.kind)
        key_secret = secret_from(None, argument="", env=("FAL_KEY_SECRET",), provider=cls.kind)
        if key_id is None or key_secret is None:
            return None
        return SecretStr(f"{key_id.get_secret_value()}:{key_secret.get_secret_value()}")

    def _require_key(self) -> SecretStr:
        """The key given or found in the environment (remembered once found); AuthenticationError without one."""
        key = self._key or self._credential()
        if key is None:
            raise AuthenticationError(
                "no fal key: pass api_key= or set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)", provider=self.name
            )
        self._key = key
        return key

    @classmethod
    def has_credentials(cls) -> bool:
        return bool(env_setting("FAL_KEY") or (env_setting("FAL_KEY_ID") and env_setting("FAL_KEY_SECRET")))

    @classmethod
    def credential_hint(cls) -> str:
        return "FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)"

    @classmethod
    def for_sandbox(cls, sandbox: SandboxEndpoints, **options: Any) -> FalGenerator:
        return cls(
            api_key=SANDBOX_KEY,
            base_url=sandbox.url("fal"),
            run_url=sandbox.url("fal_run"),
            rest_url=sandbox.url("fal_rest"),
            **options,
        )

    @classmethod
    def sandbox_environment(cls, sandbox: SandboxEndpoints) -> dict[str, str]:
        return {
            "FAL_KEY": SANDBOX_KEY,
            cls.BASE_URL_ENV: sandbox.url("fal"),
            cls.RUN_URL_ENV: sandbox.url("fal_run"),
            cls.REST_URL_ENV: sandbox.url("fal_rest"),
        }

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        unit = self.prices.fal_unit(self.model)
        return None if unit is None else unit.usd

    def __repr__(self) -> str:
        return f"FalGenerator(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    def _realtime_backend(self) -> RealtimeBackend:
        """Realtime sessions on fal's realtime WebSocket (the queue API when it is refused)."""
        from lightning_client.providers.fal.realtime import FalRealtimeBackend, FalSocketAccess

        access = FalSocketAccess(
            generator=self,
            app=self.app,
            run_url=self.run_url,
            rest_url=self.rest_url,
            hints=self.error_hints,
            pricing=self.pricing,
            client=self._http.get,
            key=self._require_key,
            download=self._download_output,
        )
        return FalRealtimeBackend(access)

    # -- request mapping --------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return auth_header("Key", self._require_key())

    def _prepare_headers(self, ctx: AttemptContext) -> dict[str, str]:
        return {**self._auth_headers(), **wire.request_timeout(ctx.remaining())}

    def _prepare_route(self, ctx: AttemptContext) -> str:
        """The queue submit (with `fal_webhook`), or in `mode="run"` the synchronous run."""
        if self.mode == "run":
            return f"{self.run_url}/{self.app}"
        return f"{self.queue_url}/{self.app}" + ("?" + urlencode({"fal_webhook": self.webhook}) if self.webhook else "")

    def _prepare_payload(self, ctx: AttemptContext) -> dict[str, Any]:
        return wire.arguments(ctx)

    # -- lifecycle --------------------------------------------------------------------------------

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        key = self._require_key()
        with self._http.lease() as client:
            self.pricing.prefetch(client, key)
            arguments = self._prepare_payload(ctx)
            if self.mode == "run":
                output, units, job = await self._run(ctx, client, arguments)
            else:
                job = await self._submit(ctx, client, key, arguments)
                ctx.job_started(job.request_id)
                try:
                    await self._wait(ctx, client, key, job)
                    output, units = await self._result(ctx, client, key, job)
                except asyncio.CancelledError:
                    await self._abandon(ctx, client, key, job)
                    raise
                except LightningError as exc:
                    exc.request_id = exc.request_id or job.request_id
                    if job.status != "COMPLETED":
                        await self._abandon(ctx, client, key, job)
                    elif job.in_progress_at is None and job.completed.get("error_type") in wire.TIMEOUT_TYPES:
                        ctx.add_cost(Cost(usd=0.0, basis="expired before it started: not billed", estimated=False))
                    else:  # it ran to COMPLETED, but its usage could not be read: it may well be billed
                        ctx.add_cost(
                            Cost.unknown(f"request completed but its result could not be read ({type(exc).__name__})")
                        )
                    raise
            try:
                images, download_s = await self._images(ctx, client, output, job.request_id)
            except (asyncio.CancelledError, LightningError) as exc:
                if isinstance(exc, LightningError):
                    exc.request_id = exc.request_id or job.request_id
                # The request completed, so it is billed even though its images are not delivered.
                ctx.add_cost(
                    await self.pricing.cost(
                        client,
                        key,
                        units,
                        ctx.request.num_images,
                        wire.inference_s(job.completed, output),
                        request=ctx.request,
                    )
                )
                raise
            inference_s = wire.inference_s(job.completed, output)
            ctx.add_cost(await self.pricing.cost(client, key, units, len(images), inference_s, request=ctx.request))
            timings = Timings(queue_s=_queue_s(job, inference_s), inference_s=inference_s, download_s=download_s)
            return ctx.result(images, model=self.model, seed=wire.seed_used(ctx, output), timings=timings)

    async def _submit(
        self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, arguments: dict[str, Any]
    ) -> _Job:
        submitted = time.monotonic()
        post, answer = self._post_create(
            ctx,
            client,
            self._prepare_route(ctx),
            what="submit",
            prepare=lambda: (self._prepare_headers(ctx), None),
            json_body=arguments,
        )
        try:
            response = await answer  # `post` runs on if we are cancelled: see below
        except asyncio.CancelledError:
            self._cancel_when_submitted(ctx, client, key, post, submitted)
            if not expired(ctx.remaining()):
                raise
            # The deadline: report it here, with what we know about the submit.
            raise GenerationTimeoutError(
                "deadline passed while submitting; the request may be queued, so it is not re-sent"
                " (it is cancelled if the submit still answers)",
                provider=self.name,
                outcome_unknown=True,
            ) from None

        async def abandon(request_id: str) -> None:
            await self._abandon(ctx, client, key, self._job(request_id, {}, submitted))

        body = await self._created(ctx, response, what="submit", id_key="request_id", noun="request", abandon=abandon)
        request_id = body["request_id"]
        job = self._job(request_id, body, submitted)
        self._observe(job, body)
        log.debug("request %s submitted: %s", request_id, job.status)
        return job

    def _cancel_when_submitted(
        self,
        ctx: AttemptContext,
        client: httpx.AsyncClient,
        key: SecretStr,
        post: asyncio.Future[httpx.Response],
        submitted: float,
    ) -> None:
        """The attempt was abandoned with a submit in flight: once it answers, cancel what it queued.

        The late request's id and cost still reach the attempt's record (`AttemptContext.late_job`).
        """

        async def cancel(request_id: str) -> None:
            status: int | None = None
            try:
                status = await self._cancel(client, key, self._job(request_id, {}, submitted))
            except httpx.HTTPError as exc:
                log.warning("cancel of late fal request %s failed: %s", request_id, type(exc).__name__)
            if status == 202:
                cost = Cost(usd=0.0, basis="cancelled while queued: not billed", estimated=True)
            else:
                cost = Cost.unknown(f"late fal request {request_id}: cancel answered {status}; it may be billed")
            ctx.late_job(request_id, cost)

        self._cancel_when_answered(
            post,
            "request_id",
            cancel,
            warning="fal request %s was submitted after its attempt was abandoned; cancelling it",
            what="cancel of a late fal submit",
        )

    def _job(self, request_id: str, body: dict[str, Any], submitted: float) -> _Job:
        """Follow the URLs the submit returned (built from owner/app and the id when absent)."""
        root = f"{self._requests_root}/{quote(request_id, safe='')}"

        def url(name: str, default: str) -> str:
            value = body.get(name)
            return value if isinstance(value, str) and value else default

        return _Job(
            request_id=request_id,
            status_url=url("status_url", f"{root}/status"),
            response_url=url("response_url", root),
            cancel_url=url("cancel_url", f"{root}/cancel"),
            submitted=submitted,
        )

    def _observe(self, job: _Job, status: dict[str, Any]) -> bool:
        """Record one status object; True once it is COMPLETED."""
        value = status.get("status")
        if value == "IN_PROGRESS" and job.in_progress_at is None:
            job.in_progress_at = time.monotonic()
        if isinstance(value, str):
            job.status = value
        if value == "COMPLETED":
            job.completed = status
            return True
        return False

    async def _wait(self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> None:
        try:
            # Without a deadline, a generous cap still bounds the wait (fal documents no job limit).
            async with async_timeout(None if ctx.deadline is not None else MAX_JOB_S):
                if job.status != "COMPLETED" and not (self.use_sse and await self._stream(ctx, client, key, job)):
                    await self._poll(ctx, client, key, job)
        except TIMEOUT_ERRORS:
            raise GenerationTimeoutError(
                f"request still {job.status} after {MAX_JOB_S:.0f} s", provider=self.name
            ) from None
        error = job.completed.get("error")
        error_type = job.completed.get("error_type")
        if error or error_type:
            raise wire.completed_error(str(error or error_type), str(error_type or ""), job.request_id)

    async def _stream(self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> bool:
        """Follow the SSE status stream; True when it delivered COMPLETED, False to fall back to polling.

        A stream refused with a retryable status or broken in transit is opened again in place
        (counted as read retries); a refusal that will not change falls back to polling.
        """
        reads = self._reads(ctx)
        retry = 0
        while True:
            error = await self._stream_once(client, key, job)
            if error is None:
                return True
            if isinstance(error, str):
                return False
            delay = reads.delay(retry, error)
            if delay is None:
                log.debug("status stream for %s failed (%s); polling instead", job.request_id, error)
                return False
            retry += 1
            ctx.read_retried()
            await asyncio.sleep(delay)

    async def _stream_once(self, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> LightningError | str | None:
        """One status stream: None when it delivered COMPLETED, an error to retry, or why to poll instead."""
        parts = urlsplit(job.status_url)
        url = parts._replace(path=parts.path.rstrip("/") + "/stream").geturl()
        started = time.monotonic()
        # The server sends a comment every 15 s, so a silent 30 s means the stream is dead.
        timeout = self._read_timeout(max(30.0, self._http.timeout.read or 0.0))
        try:
            async with aconnect_sse(client, "GET", url, headers=auth_header("Key", key), timeout=timeout) as source:
                if source.response.status_code != 200:
                    log.debug("status stream for %s answered HTTP %d", job.request_id, source.response.status_code)
                    await source.response.aread()
                    return error_from_response(
                        self.name,
                        source.response,
                        request_id=job.request_id,
                        what="status stream",
                        hints=self.error_hints,
                    )
                events = source.aiter_sse()
                completed = False
                async for event in events:
                    if not event.data:
                        continue
                    status = json.loads(event.data)
                    if isinstance(status, dict) and self._observe(job, status):
                        completed = True
                        break
                if completed:
                    log.debug(
                        "request %s completed (stream, %.1f ms)", job.request_id, (time.monotonic() - started) * 1e3
                    )
                    await _drain(events)
                    return None
        except httpx.HTTPError as exc:
            return transport_error(self.name, exc, what="status stream", request_id=job.request_id)
        except (SSEError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"unreadable status stream ({type(exc).__name__})"
        log.debug("status stream for %s ended before COMPLETED; polling instead", job.request_id)
        return "the stream ended before COMPLETED"

    async def _poll(self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> None:
        delays = PollDelays(self.poll_initial_s, self.poll_max_s)
        reads = self._reads(ctx)

        async def read() -> dict[str, Any]:
            return await self._read_status(client, key, job)

        while True:
            status = await reads.run(read, what=f"status of {job.request_id}")
            if self._observe(job, status):
                return
            await asyncio.sleep(delays.next(ctx.remaining()))

    async def _result(
        self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, job: _Job
    ) -> tuple[dict[str, Any], float | None]:

        async def read() -> tuple[dict[str, Any], float | None]:
            response = await self._get_job(client, key, job, job.response_url, what="result")
            output = parse_json(response, provider=self.name, what="result", request_id=job.request_id)
            return output, wire.billable_units(response)

        return await self._reads(ctx).run(read, what=f"result of {job.request_id}")

    async def _run(
        self, ctx: AttemptContext, client: httpx.AsyncClient, arguments: dict[str, Any]
    ) -> tuple[dict[str, Any], float | None, _Job]:
        """`mode="run"`: one POST that returns the output; the request id comes with it."""
        started = time.monotonic()
        try:
            response = await send(
                client,
                "POST",
                self._prepare_route(ctx),
                provider=self.name,
                hints=self.error_hints,
                what="run",
                headers=self._prepare_headers(ctx),
                json_body=arguments,
                creates=True,
            )
        except asyncio.CancelledError:
            if not expired(ctx.remaining()):
                raise
            raise GenerationTimeoutError(
                "deadline passed during a synchronous run; fal may still run it (it cannot be cancelled by id)",
                provider=self.name,
                outcome_unknown=True,
            ) from None
        request_id = response.headers.get("x-fal-request-id") or ""
        if request_id:
            ctx.job_started(request_id)
        output = parse_json(response, provider=self.name, what="run", request_id=request_id or None)
        job = _Job(request_id, "", "", "", submitted=started, status="COMPLETED")
        return output, wire.billable_units(response), job

    async def _images(
        self, ctx: AttemptContext, client: httpx.AsyncClient, output: dict[str, Any], request_id: str
    ) -> tuple[list[GeneratedImage], float]:
        urls = wire.image_urls(output, provider=self.name, request_id=request_id)
        nsfw = wire.nsfw_flags(ctx.request, output, len(urls), provider=self.name, request_id=request_id)
        started = time.monotonic()
        decoded = await gather_all([self._download(ctx, client, url, request_id) for url in urls])
        download_s = time.monotonic() - started
        images = []
        for index, image in enumerate(decoded):
            if image.format != ctx.request.output_format:
                image = await asyncio.to_thread(convert_image, image, ctx.request.output_format)
            images.append(image.to_generated(url=urls[index], nsfw=nsfw[index] if index < len(nsfw) else None))
        flagged = sum(1 for flag in nsfw if flag)
        if flagged:
            ctx.warn(
                "ignored",
                "safety_checker",
                f"{flagged} of {len(urls)} images were flagged by the safety checker (GeneratedImage.nsfw)",
            )
        return images, download_s

    async def _download(
        self, ctx: AttemptContext, client: httpx.AsyncClient, url: str, request_id: str
    ) -> DecodedImage:
        # Files live on fal's CDN: no credentials are sent with them.
        image, seconds = await self._download_output(client, url, request_id, ctx=ctx)
        log.debug("request %s: downloaded %s in %.1f ms", request_id, url[:80], seconds * 1e3)
        return image

    async def _abandon(self, ctx: AttemptContext, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> None:
        """Cancel a request we no longer wait for and record what it may cost, in one shielded, bounded step."""
        await self._settle_abandoned(
            ctx,
            self._cancelled_cost(client, key, job, ctx.request),
            timeout=2 * self.cancel_timeout_s + PRICING_WAIT_S,
            what=f"cancel of fal request {job.request_id}",
        )

    async def _cancelled_cost(
        self, client: httpx.AsyncClient, key: SecretStr, job: _Job, request: GenerationRequest
    ) -> Cost:
        """Cancel the request and price what it ran (unknown when the cancel failed)."""
        status = await shielded(
            self._cancel(client, key, job),
            timeout=self.cancel_timeout_s,
            what=f"cancel of fal request {job.request_id}",
        )
        if job.status == "IN_QUEUE" and status is not None and status < 300:
            return Cost(usd=0.0, basis="cancelled while queued: not billed", estimated=False)
        if status == 400 and job.in_progress_at is None and not job.completed:
            # ALREADY_COMPLETED although we last saw it queued: ask how it ended (expired unstarted, or ran).
            await shielded(
                self._final_status(client, key, job),
                timeout=self.cancel_timeout_s,
                what=f"status of fal request {job.request_id}",
            )
        if job.in_progress_at is None and job.completed.get("error_type") in wire.TIMEOUT_TYPES:
            return Cost(usd=0.0, basis="expired before it started: not billed", estimated=False)
        if status is None:
            return Cost.unknown(f"cancel of fal request {job.request_id} failed: it may run and be billed")
        return await self.pricing.cost(client, key, None, request.num_images, None, note="abandoned", request=request)

    async def arecover_job(self, job_id: str, request: GenerationRequest, *, wait: bool = False) -> RecoveredJob:
        """Queue request `job_id` (submitted for `request` by a process that is gone): its images when it
        completed, its error when it failed; one still queued or running is cancelled unless `wait`.
        Never submits."""
        key = self._require_key()
        ctx = AttemptContext(self, request)
        job = self._job(job_id, {}, time.monotonic())
        with self._http.lease() as client:
            status = await self._reads(ctx).run(lambda: self._read_status(client, key, job), what=f"status of {job_id}")
            if not self._observe(job, status):
                if not wait:
                    await self._abandon(ctx, client, key, job)
                    return RecoveredJob(job_id, "canceled", ctx.cost)
                await self._poll(ctx, client, key, job)
            try:
                output, units = await self._result(ctx, client, key, job)
                images, download_s = await self._images(ctx, client, output, job_id)
            except LightningError as exc:
                if job.in_progress_at is None and job.completed.get("error_type") in wire.TIMEOUT_TYPES:
                    cost = Cost(usd=0.0, basis="expired before it started: not billed", estimated=False)
                else:
                    cost = Cost.unknown(f"request completed but its result could not be read ({type(exc).__name__})")
                return RecoveredJob(job_id, "failed", cost, error=exc)
            inference_s = wire.inference_s(job.completed, output)
            cost = await self.pricing.cost(client, key, units, len(images), inference_s, request=request)
        timings = Timings(queue_s=_queue_s(job, inference_s), inference_s=inference_s, download_s=download_s)
        result = ctx.result(images, model=self.model, seed=wire.seed_used(ctx, output), timings=timings, cost=cost)
        result.request_id = job_id
        return RecoveredJob(job_id, "succeeded", cost, result=result)

    async def _read_status(self, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> dict[str, Any]:
        """One GET of the request's status (no retries: callers decide)."""
        response = await self._get_job(client, key, job, job.status_url, what="status")
        return parse_json(response, provider=self.name, what="status", request_id=job.request_id)

    async def _get_job(
        self, client: httpx.AsyncClient, key: SecretStr, job: _Job, url: str, *, what: str
    ) -> httpx.Response:
        """One authenticated GET of one of the request's URLs (status or result)."""
        return await send(
            client,
            "GET",
            url,
            provider=self.name,
            hints=self.error_hints,
            what=what,
            headers=auth_header("Key", key),
            request_id=job.request_id,
        )

    async def _final_status(self, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> None:
        self._observe(job, await self._read_status(client, key, job))

    async def _cancel(self, client: httpx.AsyncClient, key: SecretStr, job: _Job) -> int:
        response = await client.put(job.cancel_url, headers=auth_header("Key", key))
        # 202 CANCELLATION_REQUESTED; 400 ALREADY_COMPLETED and 404 NOT_FOUND are expected races.
        log.debug("PUT %s -> %d", job.cancel_url, response.status_code)
        return response.status_code


async def _drain(events: AsyncIterator[ServerSentEvent]) -> None:
    """Read a status stream to its end after COMPLETED (fal closes it right after that event), so that its
    connection goes back to the pool and its readers end now rather than when garbage-collected.

    Given up (the connection is then closed) at a further event or after `_STREAM_DRAIN_S`.
    """
    try:
        async with async_timeout(_STREAM_DRAIN_S):
            async for _ in events:
                return
    except _DRAIN_ERRORS:
        pass


def _queue_s(job: _Job, inference_s: float | None) -> float | None:
    """Submit to IN_PROGRESS as we saw it; without that event, the wait less the inference time."""
    if job.in_progress_at is not None:
        return max(0.0, job.in_progress_at - job.submitted)
    if job.completed and inference_s is not None:
        return max(0.0, time.monotonic() - job.submitted - inference_s)
    return None


def _webhook(webhook: str | None, events: Sequence[str] | None, mode: str) -> str | None:
    """The `fal_webhook` URL; bad values raise ValueError naming the option and what is allowed."""
    if events is not None and (list([events] if isinstance(events, str) else events) != ["completed"]):
        raise ValueError(f"webhook_events: fal sends only one event, on completion: use ['completed'], got {events!r}")
    if webhook is None:
        if events is not None:
            raise ValueError("webhook_events needs webhook (the URL the event is sent to)")
        return None
    parts = urlsplit(webhook) if isinstance(webhook, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook must be an http:// or https:// URL, got {webhook!r}")
    if mode != "queue":
        raise ValueError("webhook needs mode='queue': fal sends webhooks for queued requests only")
    return webhook


def fal_key(value: str | SecretStr | None = None) -> SecretStr | None:
    """The fal key: the argument, else FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (kept for compatibility)."""
    return FalGenerator._credential(value)
