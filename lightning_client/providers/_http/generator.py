"""`HttpGenerator`: the shared base of the hosted backends (clients, create/cancel plumbing, downloads) and
its lifecycle template, create -> poll -> download -> cost, which a queue-style provider fills in with hooks.

The template (`_generate`) calls, in order:

- `_prepare_headers(ctx)` (default: `_auth_headers()`), `_prepare_route(ctx)` and `_prepare_payload(ctx)`:
  the create's headers, URL and JSON body; the create's answer names the job under `job_id_key`;
- `_status_route(job)` polled until `_parse_status(job, body)` says the job ended;
  `_parse_error(job, body)` for one that did not succeed;
- `_parse_outputs(job, body)`: the output file URLs, downloaded (read again in place when damaged) and
  converted to the requested format;
- `_parse_cost(ctx, job, body)`, `_parse_seed(ctx, body)` and `_parse_inference_s(body)` for the result;
- `_cancel_route(job)` (`cancel_method`) for a job abandoned on the way (deadline, cancellation, failure),
  its cost then read from the cancel's answer (unknown when the cancel fails).

fal and Replicate override the larger steps where their protocols need it (status streams, sync mode,
create recovery) and use the hooks where they fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger
from lightning_client.errors import (
    GenerationTimeoutError,
    LightningError,
    ProviderResponseError,
)
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.images import DecodedImage, convert_image, download_image, is_loopback_url
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.providers._http.clients import HttpClients, make_timeout
from lightning_client.providers._http.errors import PLAIN, ErrorHints
from lightning_client.providers._http.exchange import (
    PollDelays,
    ReadRetries,
    expired,
    parse_json,
    refused,
    salvage_id,
    send,
)
from lightning_client.providers._http.rate_limit import RateLimiter
from lightning_client.providers._http.tasks import bounded, detach, gather_all, keep, run_kept, shielded
from lightning_client.result import Cost, GeneratedImage, GenerationResult, Timings

__all__ = ["HttpGenerator", "JobState", "RemoteJob"]

log = get_logger("lightning_client.providers.http")

#: Where a remote job stands, as `HttpGenerator._parse_status` reads it from the provider's answer.
JobState = Literal["queued", "running", "succeeded", "failed", "canceled"]
_UNFINISHED = frozenset({"queued", "running"})


@dataclass
class RemoteJob:
    """One remote job as the lifecycle template follows it."""

    id: str
    #: The create's answer (empty for a job known by its id only).
    created: dict[str, Any]
    #: When its create was sent (monotonic).
    submitted: float
    #: The provider's last answer about it, and where that puts it.
    last: dict[str, Any] = field(default_factory=dict)
    state: JobState = "queued"
    #: When it was first seen running (monotonic).
    running_at: float | None = None

    @property
    def finished(self) -> bool:
        """Whether it ended (succeeded, failed or canceled)."""
        return self.state not in _UNFINISHED


class HttpGenerator(BaseGenerator):
    """The shared part of the hosted backends: HTTP clients, polling and cancel settings, capabilities.

    Subclasses set `_capabilities` (and `_log`, their provider's logger) and keep the provider's
    protocol: request mapping, job lifecycle, response parsing. Every attempt passes `rate_limit`
    (requests per second and jobs in flight, configured or learned from the provider's answers).
    """

    _capabilities: Capabilities
    _log = log
    #: Whether output files may come over plain http from a loopback host. None (default): only when the
    #: generator's own API root is plain http on loopback (a sandbox or a local server), so a hostile answer
    #: from a real API cannot make it fetch local services. Set True or False to decide yourself.
    allow_loopback_downloads: bool | None = None
    #: What this provider's error answers say beyond the status code (headers, error types).
    error_hints: ClassVar[ErrorHints] = PLAIN
    #: Reads (status, stream, result, download) retried in place per read, and the first backoff.
    read_retry_limit = 4
    read_retry_first_s = 0.1
    #: Refused creates (nothing created) sent again in place, the first backoff, and the longest
    #: `Retry-After` waited out in place (beyond it the router fails over).
    create_retry_limit = 4
    create_retry_first_s = 0.1
    create_retry_max_wait_s = 5.0
    #: The template's settings: the key of the job id in the create's answer, the method of a cancel,
    #: and the longest wait for a job when the request has no deadline.
    job_id_key: ClassVar[str] = "id"
    cancel_method: ClassVar[str] = "POST"
    max_job_s: ClassVar[float] = 30 * 60.0

    def __init__(
        self,
        *,
        model: str,
        name: str | None = None,
        prices: PriceTable | None,
        timeout: float | httpx.Timeout,
        max_connections: int,
        poll_initial_s: float,
        poll_max_s: float,
        cancel_timeout_s: float,
    ) -> None:
        self.name = self._check_name(name)
        self.model = model
        self.prices = prices or DEFAULT_PRICES
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.cancel_timeout_s = cancel_timeout_s
        self._http = HttpClients(timeout=make_timeout(timeout), max_connections=max_connections)
        self.rate_limit = RateLimiter(self.name)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _admission(self, ctx: AttemptContext) -> contextlib.AbstractAsyncContextManager[object]:
        return self.rate_limit.slot(ctx.remaining())

    def expected_wait_s(self) -> float | None:
        """Seconds a request would wait behind this provider's rate limit (None: no limit applies)."""
        return self.rate_limit.expected_wait_s() if self.rate_limit.limited else None

    async def _close(self) -> None:
        await self._http.aclose()

    def _close_all(self) -> None:
        self._http.close_all()

    def _read_timeout(self, read: float) -> httpx.Timeout:
        """The clients' timeout with another read timeout."""
        base = self._http.timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def _post_create(
        self,
        ctx: AttemptContext,
        client: httpx.AsyncClient,
        url: str,
        *,
        what: str,
        prepare: Callable[[], tuple[Mapping[str, str], httpx.Timeout | None]],
        json_body: Any,
        on_answer: Callable[[httpx.Response | None], None] | None = None,
    ) -> tuple[asyncio.Task[httpx.Response], asyncio.Future[httpx.Response]]:
        """Start the POST that creates a remote job, in a task that may be left running; returns the task and
        the future to await for its answer.

        `prepare()` gives the headers and timeout of each send (they depend on the time left). A create the
        provider refused (429, 503: nothing was created) is sent again in place with backoff and
        `Retry-After`, within the deadline, until the attempt is abandoned (`create_retry_limit` times at
        most). When the attempt is abandoned, the task runs on: its answer still names the job to cancel.
        `on_answer(response)` (None when the POST failed) runs as the POST ends, before the awaiter resumes.
        """
        retries = ReadRetries(
            ctx.remaining,
            lambda: None,
            limit=self.create_retry_limit,
            first_s=self.create_retry_first_s,
            retryable=refused,
            max_wait_s=self.create_retry_max_wait_s,
        )
        abandoned = asyncio.Event()

        async def create() -> httpx.Response:
            retry = 0
            while True:
                headers, timeout = prepare()
                try:
                    return await send(
                        client,
                        "POST",
                        url,
                        provider=self.name,
                        what=what,
                        headers=headers,
                        json_body=json_body,
                        timeout=timeout,
                        creates=True,
                        hints=self.error_hints,
                    )
                except LightningError as exc:
                    delay = retries.delay(retry, exc)
                    if delay is None or abandoned.is_set():
                        if refused(exc) and not abandoned.is_set():
                            basis = f"create refused (HTTP {exc.status_code}): nothing was created"
                            ctx.add_cost(Cost(usd=0.0, basis=basis, estimated=False))
                        raise
                    self._log.debug("%s refused (%s); sending it again in %.2f s", what, exc, delay)
                    with contextlib.suppress(*TIMEOUT_ERRORS):
                        async with async_timeout(delay):
                            await abandoned.wait()
                    if abandoned.is_set():
                        raise
                retry += 1
                ctx.create_resent()

        task, answer = run_kept(create(), self._rate_limited(on_answer))
        answer.add_done_callback(lambda f: abandoned.set() if f.cancelled() else None)
        return task, answer

    def _rate_limited(
        self, on_answer: Callable[[httpx.Response | None], None] | None
    ) -> Callable[[httpx.Response | None], None]:
        """`on_answer`, after the rate limit has read the answer's rate-limit headers."""
        observe = self.rate_limit.observe
        if on_answer is None:
            return observe

        def both(response: httpx.Response | None) -> None:
            observe(response)
            on_answer(response)

        return both

    async def _created(
        self,
        ctx: AttemptContext,
        response: httpx.Response,
        *,
        what: str,
        id_key: str,
        noun: str,
        abandon: Callable[[str], Coroutine[Any, Any, None]],
    ) -> dict[str, Any]:
        """The JSON body of a create's answer, which holds the new job's id under `id_key`.

        When the body is unreadable but the id can still be read from it, the job is cancelled
        (`abandon(id)`) rather than left running unseen, and the error says so.
        """
        try:
            body = parse_json(response, provider=self.name, what=what, outcome_unknown=True)
        except ProviderResponseError as exc:
            job_id = salvage_id(response.content, id_key)
            if job_id is None:
                raise
            ctx.job_started(job_id)
            await abandon(job_id)
            raise ProviderResponseError(
                f"{exc.message}; {noun} {job_id} was identified in the partial body and cancelled",
                provider=self.name,
                status_code=response.status_code,
                request_id=job_id,
                retryable=True,
            ) from None
        job_id = body.get(id_key)
        if not isinstance(job_id, str) or not job_id:
            raise ProviderResponseError(
                f"{what} response has no {id_key}",
                provider=self.name,
                status_code=response.status_code,
                retryable=True,
                outcome_unknown=True,
            )
        return body

    def _cancel_when_answered(
        self,
        post: asyncio.Future[httpx.Response],
        id_key: str,
        cancel: Callable[[str], Coroutine[Any, Any, Any]],
        *,
        warning: str,
        what: str,
        known: Collection[str] = (),
        wait_s: float = 0.0,
    ) -> None:
        """The attempt was abandoned with a create in flight: once it answers, cancel the job it made.

        `known` holds ids already dealt with; `wait_s` is how long the server may hold the answer back.
        """

        async def reap() -> None:
            try:
                response = await post
            except LightningError:
                return
            job_id = salvage_id(response.content, id_key)
            if job_id is not None and job_id not in known:
                self._log.warning(warning, job_id)
                # Shielded and registered as a cleanup, so `aclose` waits for it.
                await shielded(cancel(job_id), timeout=self.cancel_timeout_s, what=what)

        read = self._http.timeout.read or 30.0
        detach(reap(), timeout=wait_s + read + self.cancel_timeout_s, what=what)

    async def _settle_abandoned(
        self, ctx: AttemptContext, pricing: Coroutine[Any, Any, Cost], *, timeout: float, what: str
    ) -> None:
        """Cancel and price an abandoned job in one shielded, bounded step (`pricing` does both) and add its
        cost to the attempt, also when the caller is cancelled again meanwhile (the step is finished first).

        When the step fails or runs out of time, the cost is recorded unknown, never $0.
        """
        task = asyncio.ensure_future(bounded(pricing, timeout, what))
        keep(task)
        try:
            await asyncio.shield(task)
        finally:
            while not task.done():  # cancelled again: finish the bounded step, then let the cancellation go on
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task})
            cost = task.result()
            ctx.add_cost(cost if cost is not None else Cost.unknown(f"{what} did not finish: it may be billed"))

    def _loopback_downloads(self) -> bool:
        if self.allow_loopback_downloads is not None:
            return self.allow_loopback_downloads
        root = str(getattr(self, "base_url", ""))
        return root.startswith("http://") and is_loopback_url(root)

    def _reads(self, ctx: AttemptContext | None) -> ReadRetries:
        """Read retries for one attempt, counted on its record and bounded by its deadline (none without one)."""
        if ctx is None:
            return ReadRetries(lambda: None, lambda: None, limit=self.read_retry_limit, first_s=self.read_retry_first_s)
        return ReadRetries(
            ctx.remaining, ctx.read_retried, limit=self.read_retry_limit, first_s=self.read_retry_first_s
        )

    async def _download_output(
        self,
        client: httpx.AsyncClient,
        url: str,
        job_id: str,
        *,
        headers: dict[str, str] | None = None,
        ctx: AttemptContext | None = None,
    ) -> tuple[DecodedImage, float]:
        """One output file of a finished job, and the seconds it took.

        A failed or damaged download is read again in place (the job is not re-run for it); what
        still fails is retryable for the router.
        """

        loopback = self._loopback_downloads()

        async def once() -> tuple[DecodedImage, float]:
            return await download_image(client, url, provider=self.name, headers=headers, allow_loopback_http=loopback)

        try:
            return await self._reads(ctx).run(once, what=f"download of {job_id}'s output")
        except LightningError as exc:
            exc.request_id = job_id
            exc.retryable = True  # the job succeeded; a new one will most likely deliver intact files
            raise

    # -- the lifecycle template: hooks ------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        """The credentials sent with every call (AuthenticationError when there are none); default none."""
        return {}

    def _prepare_headers(self, ctx: AttemptContext) -> dict[str, str]:
        """The create's headers (asked again for every send: they may depend on the time left)."""
        return self._auth_headers()

    def _prepare_route(self, ctx: AttemptContext) -> str:
        """The URL a create is POSTed to."""
        raise NotImplementedError(f"{type(self).__name__} sets _prepare_route or overrides _generate")

    def _prepare_payload(self, ctx: AttemptContext) -> dict[str, Any]:
        """The create's JSON body: the request in the provider's terms."""
        raise NotImplementedError(f"{type(self).__name__} sets _prepare_payload or overrides _generate")

    def _status_route(self, job: RemoteJob) -> str:
        """The URL whose GET answers the job's status."""
        raise NotImplementedError(f"{type(self).__name__} sets _status_route or overrides _generate")

    def _cancel_route(self, job: RemoteJob) -> str:
        """The URL a cancel is sent to (`cancel_method`)."""
        raise NotImplementedError(f"{type(self).__name__} sets _cancel_route or overrides _generate")

    def _parse_status(self, job: RemoteJob, body: dict[str, Any]) -> JobState:
        """Where a status answer (or the create's, or a cancel's) puts the job."""
        raise NotImplementedError(f"{type(self).__name__} sets _parse_status or overrides _generate")

    def _parse_error(self, job: RemoteJob, body: dict[str, Any]) -> LightningError:
        """The error of a job that ended without success; default a retryable response error."""
        return ProviderResponseError(
            f"job {job.state}", provider=self.name, request_id=job.id, retryable=job.state == "failed"
        )

    def _parse_outputs(self, job: RemoteJob, body: dict[str, Any]) -> Sequence[str]:
        """The output file URLs of a job that succeeded."""
        raise NotImplementedError(f"{type(self).__name__} sets _parse_outputs or overrides _generate")

    def _parse_cost(self, ctx: AttemptContext, job: RemoteJob, body: dict[str, Any]) -> Cost:
        """What the job costs, from the provider's last answer about it (a cancel's for an abandoned job)."""
        return Cost.unknown(f"{self.name} reports no cost")

    def _parse_seed(self, ctx: AttemptContext, body: dict[str, Any]) -> int:
        """The seed the job used; default the request's."""
        return ctx.request.seed

    def _parse_inference_s(self, body: dict[str, Any]) -> float | None:
        """Seconds the job ran, as the provider reports them; default unknown."""
        return None

    def _download_headers(self, url: str) -> dict[str, str] | None:
        """Headers for downloading one output file; default none (public files)."""
        return None

    # -- the lifecycle template: steps -----------------------------------------------------------

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        """Create the job, poll it to its end, download its outputs and price it; cancel it when abandoned."""
        self._auth_headers()  # no credentials: fail before anything is sent
        with self._http.lease() as client:
            job = await self._create_job(ctx, client)
            ctx.job_started(job.id)
            try:
                await self._follow_job(ctx, client, job)
                if job.state != "succeeded":
                    raise self._parse_error(job, job.last)
                urls = self._parse_outputs(job, job.last)
                started = time.monotonic()
                images = await self._download_outputs(ctx, client, urls, job.id)
            except (asyncio.CancelledError, LightningError) as exc:
                if isinstance(exc, LightningError):
                    exc.request_id = exc.request_id or job.id
                if job.finished:  # it ended on its own: billed for what it ran
                    ctx.add_cost(self._parse_cost(ctx, job, job.last))
                else:
                    await self._abandon_job(ctx, client, job)
                raise
            ctx.add_cost(self._parse_cost(ctx, job, job.last))
        inference_s = self._parse_inference_s(job.last)
        queue_s = None if job.running_at is None else max(0.0, job.running_at - job.submitted)
        timings = Timings(queue_s=queue_s, inference_s=inference_s, download_s=time.monotonic() - started)
        return ctx.result(images, model=self.model, seed=self._parse_seed(ctx, job.last), timings=timings)

    async def _create_job(self, ctx: AttemptContext, client: httpx.AsyncClient) -> RemoteJob:
        """Send the create (never blindly again: see `_post_create`) and read the job it made."""
        submitted = time.monotonic()
        post, answer = self._post_create(
            ctx,
            client,
            self._prepare_route(ctx),
            what="create",
            prepare=lambda: (self._prepare_headers(ctx), None),
            json_body=self._prepare_payload(ctx),
        )
        try:
            response = await answer  # `post` runs on if we are cancelled: its answer names the job to cancel
        except asyncio.CancelledError:
            self._cancel_late_job(ctx, client, post, submitted)
            if not expired(ctx.remaining()):
                raise
            raise GenerationTimeoutError(
                "deadline passed while creating the job; it may exist, so it is not re-sent"
                " (it is cancelled if the create still answers)",
                provider=self.name,
                outcome_unknown=True,
            ) from None

        async def abandon(job_id: str) -> None:
            await self._abandon_job(ctx, client, RemoteJob(job_id, {}, submitted))

        body = await self._created(ctx, response, what="create", id_key=self.job_id_key, noun="job", abandon=abandon)
        job = RemoteJob(str(body[self.job_id_key]), body, submitted)
        self._observe_job(job, body)
        return job

    def _observe_job(self, job: RemoteJob, body: dict[str, Any]) -> None:
        """Record one answer about the job."""
        job.last = body
        job.state = self._parse_status(job, body)
        if job.state != "queued" and job.running_at is None:
            job.running_at = time.monotonic()

    async def _follow_job(self, ctx: AttemptContext, client: httpx.AsyncClient, job: RemoteJob) -> None:
        """Poll the job's status (adaptive delays, reads retried in place) until it ends."""
        delays = PollDelays(self.poll_initial_s, self.poll_max_s)
        reads = self._reads(ctx)

        async def read() -> dict[str, Any]:
            response = await send(
                client,
                "GET",
                self._status_route(job),
                provider=self.name,
                what="status",
                headers=self._auth_headers(),
                request_id=job.id,
                hints=self.error_hints,
            )
            return parse_json(response, provider=self.name, what="status", request_id=job.id)

        try:
            async with async_timeout(None if ctx.deadline is not None else self.max_job_s):
                while not job.finished:
                    await asyncio.sleep(delays.next(ctx.remaining()))
                    self._observe_job(job, await reads.run(read, what=f"status of {job.id}"))
        except TIMEOUT_ERRORS:
            raise GenerationTimeoutError(
                f"job still {job.state} after {self.max_job_s:.0f} s", provider=self.name, request_id=job.id
            ) from None

    async def _download_outputs(
        self, ctx: AttemptContext, client: httpx.AsyncClient, urls: Sequence[str], job_id: str
    ) -> list[GeneratedImage]:
        """Every output file, in the requested format."""
        decoded = await gather_all(
            [self._download_output(client, url, job_id, headers=self._download_headers(url), ctx=ctx) for url in urls]
        )
        images = []
        for url, (image, _) in zip(urls, decoded, strict=True):
            if image.format != ctx.request.output_format:
                image = await asyncio.to_thread(convert_image, image, ctx.request.output_format)
            images.append(image.to_generated(url=url))
        return images

    async def _cancel_job(self, client: httpx.AsyncClient, job: RemoteJob) -> dict[str, Any] | None:
        """Cancel the job; its answer (an empty map when unreadable), or None when the cancel failed."""
        try:
            response = await send(
                client,
                self.cancel_method,
                self._cancel_route(job),
                provider=self.name,
                what="cancel",
                headers=self._auth_headers(),
                request_id=job.id,
                hints=self.error_hints,
            )
        except LightningError as exc:
            self._log.warning("cancel of %s job %s failed: %s", self.name, job.id, exc)
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    def _cost_after_cancel(self, ctx: AttemptContext, job: RemoteJob, answer: dict[str, Any] | None) -> Cost:
        if answer is None:
            return Cost.unknown(f"cancel of {self.name} job {job.id} failed: it may run and be billed")
        return self._parse_cost(ctx, job, answer or job.last)

    async def _abandon_job(self, ctx: AttemptContext, client: httpx.AsyncClient, job: RemoteJob) -> None:
        """Cancel a job we no longer wait for and record what it cost, in one shielded, bounded step."""
        what = f"cancel of {self.name} job {job.id}"

        async def cancelled_cost() -> Cost:
            answer = await shielded(self._cancel_job(client, job), timeout=self.cancel_timeout_s, what=what)
            return self._cost_after_cancel(ctx, job, answer)

        await self._settle_abandoned(ctx, cancelled_cost(), timeout=self.cancel_timeout_s + 1.0, what=what)

    def _cancel_late_job(
        self, ctx: AttemptContext, client: httpx.AsyncClient, post: asyncio.Future[httpx.Response], submitted: float
    ) -> None:
        """The attempt was abandoned with its create in flight: once it answers, cancel the job it made; the
        late job's id and cost still reach the attempt's record (`AttemptContext.late_job`)."""

        async def cancel(job_id: str) -> None:
            job = RemoteJob(job_id, {}, submitted)
            ctx.late_job(job_id, self._cost_after_cancel(ctx, job, await self._cancel_job(client, job)))

        self._cancel_when_answered(
            post,
            self.job_id_key,
            cancel,
            warning=f"{self.name} job %s was created after its attempt was abandoned; cancelling it",
            what=f"cancel of a late {self.name} create",
        )
