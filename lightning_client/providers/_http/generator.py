"""`HttpGenerator`: the shared base of the hosted backends (clients, create/cancel plumbing, downloads)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any, ClassVar

import httpx

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger
from lightning_client.errors import (
    LightningError,
    ProviderResponseError,
)
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.images import DecodedImage, download_image, is_loopback_url
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.providers._http.clients import HttpClients, make_timeout
from lightning_client.providers._http.errors import PLAIN, ErrorHints
from lightning_client.providers._http.exchange import ReadRetries, parse_json, refused, salvage_id, send
from lightning_client.providers._http.rate_limit import RateLimiter
from lightning_client.providers._http.tasks import bounded, detach, keep, run_kept, shielded
from lightning_client.result import Cost

log = get_logger("lightning_client.providers.http")


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
