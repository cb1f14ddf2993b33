"""`ReplicateGenerator`: bytedance/sdxl-lightning-4step over Replicate's predictions HTTP API."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
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
    HttpGenerator,
    PollDelays,
    ProviderOption,
    auth_header,
    env_setting,
    expired,
    gather_all,
    hosted_arguments,
    parse_json,
    send,
    shielded,
)
from lightning_client.providers.replicate import wire
from lightning_client.providers.replicate.pricing import ReplicatePricing
from lightning_client.providers.replicate.recovery import ABSENT, ABSENT_AFTER, claims, find_created, find_listed
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GeneratedImage, GenerationResult, Timings
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.state.jobs import RecoveredJob

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "SANDBOX_TOKEN", "ReplicateGenerator", "replicate_token"]

log = get_logger("lightning_client.providers.replicate")

DEFAULT_BASE_URL = "https://api.replicate.com"
#: The token the sandbox accepts; not a secret.
SANDBOX_TOKEN = "r8_sandbox"
DEFAULT_MODEL = "bytedance/sdxl-lightning-4step:5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"

#: Predictions time out after running 30 minutes; we stop waiting a minute later.
MAX_JOB_S = 31 * 60.0
#: Hosts that serve Replicate output files and may receive the token (the docs say downloads need it).
_FILE_HOSTS = re.compile(r"(^|\.)replicate\.delivery$")


@dataclass
class _Done:
    """One finished prediction: its final JSON, decoded images and download time."""

    prediction: dict[str, Any]
    images: list[DecodedImage]
    download_s: float


class ReplicateGenerator(HttpGenerator):
    """SDXL-Lightning on Replicate (`bytedance/sdxl-lightning-4step` by default).

    One call makes one attempt: a prediction (or, above 4 images, several run
    concurrently), created with `Prefer: wait` and `Cancel-After` derived from the
    request's deadline, followed with adaptive polling, cancelled remotely when
    abandoned, and priced from `metrics.predict_time`.

    Args:
        api_key: Replicate token; default: the REPLICATE_API_TOKEN environment variable.
            Surrounding whitespace is stripped; a token with whitespace inside is an error.
        base_url: API root without `/v1`; default: REPLICATE_BASE_URL, else https://api.replicate.com.
        model: `owner/name:version` (versioned route) or `owner/name` (official-model route). With
            `deployment`, the model the deployment runs (for prices and records only).
        deployment: `owner/name` of a deployment: predictions are created on it
            (`POST /v1/deployments/{owner}/{name}/predictions`) instead of on the model.
        webhook: an HTTPS URL Replicate POSTs the prediction to (`http://` only to a loopback host,
            which the sandbox accepts); the generator still waits for the result itself.
        webhook_events: the events the webhook is sent for (`webhook_events_filter`): a subset of
            start, output, logs, completed; default Replicate's (output and completed).
        name: what routers, ledgers and reports call this generator (default "replicate").
        prices: price table for the hardware $/s (default `DEFAULT_PRICES`).
        wait_s: longest `Prefer: wait` to ask for (1..60; 0 turns sync mode off).
        timeout: seconds (or an `httpx.Timeout`) for each HTTP exchange, not the whole job.
        max_connections: connection pool size per event loop.
        poll_initial_s / poll_max_s: adaptive polling starts at the first and backs off to the second.
        cancel_timeout_s: how long a best-effort remote cancel may take.
        api_token: deprecated spelling of `api_key`. Positional arguments (api_token, base_url,
            model) are deprecated too.
    """

    kind = "replicate"
    name = "replicate"
    _log = log
    #: One recorded run took 2.58 s total_time with 1.63 s predict_time (docs/costs.md).
    latency_prior_s = 2.6
    #: Replicate bills predict_time; the one recorded run's 1.63 s is the prior per image.
    PREDICT_PRIOR_S = 1.63
    credential_env = ("REPLICATE_API_TOKEN",)
    #: Read when `base_url` is not given, as the official client does.
    BASE_URL_ENV = "REPLICATE_BASE_URL"
    sandboxed = True
    #: Creates answered 500/502 whose prediction is provably absent from the list, sent again in place.
    create_resend_limit = 2
    options = (
        ProviderOption("model", "Model: owner/name:version or owner/name."),
        ProviderOption("base_url", "API root without /v1.", env="REPLICATE_BASE_URL"),
        ProviderOption("wait_s", "Longest Prefer: wait, 0 to 60 seconds (0: poll only).", type=int),
        ProviderOption("deployment", "Deployment owner/name: predictions are created on it."),
    )

    def __init__(
        self,
        *legacy: Any,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        model: str | None = None,
        name: str | None = None,
        prices: PriceTable | None = None,
        wait_s: int = 60,
        timeout: float | httpx.Timeout = 30.0,
        max_connections: int = 64,
        poll_initial_s: float = 0.05,
        poll_max_s: float = 1.0,
        cancel_timeout_s: float = 5.0,
        deployment: str | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        api_token: str | SecretStr | None = None,
    ) -> None:
        api_key, base_url, model = hosted_arguments(
            "ReplicateGenerator",
            legacy,
            api_key=api_key,
            base_url=base_url,
            model=model,
            renamed={"api_token": ("api_key", api_token)},
        )
        if not 0 <= wait_s <= wire.MAX_WAIT_S:
            raise ValueError(f"wait_s must be from 0 to 60 seconds, got {wait_s}")
        self.webhook_fields = wire.webhook_fields(webhook, webhook_events)
        if deployment is not None and not re.fullmatch(r"[^/\s:]+/[^/\s:]+", deployment):
            raise ValueError(f"deployment must be 'owner/name', got {deployment!r}")
        self.deployment = deployment
        model = model or DEFAULT_MODEL
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
        self.base_url = (base_url or env_setting(self.BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.wait_s = wait_s
        self._token = self._credential(api_key)
        self._api_host = urlsplit(self.base_url).netloc
        #: The hardware's $/s from the price table and the cost of each prediction.
        self.pricing = ReplicatePricing(self.prices, model)
        owner_name, _, version = model.partition(":")
        self._version: str | None = None
        if deployment is not None:
            self._create_url = f"{self.base_url}/v1/deployments/{deployment}/predictions"
        elif version:
            self._create_url = f"{self.base_url}/v1/predictions"
            self._version = version
        else:
            self._create_url = f"{self.base_url}/v1/models/{owner_name}/predictions"
        self._capabilities = Capabilities(
            native_steps=frozenset({4}),
            emulated_steps=frozenset({1, 2, 8}),
            min_side=256,
            max_side=1280,
            max_images=8,
            max_images_per_call=wire.MAX_OUTPUTS,
            formats=frozenset({"png"}),
            converted_formats=frozenset({"jpeg", "webp"}),
            seed=True,
            negative_prompt=True,
            guidance=True,
        )

    @classmethod
    def _credential(cls, value: str | SecretStr | None = None) -> SecretStr | None:
        return secret_from(value, argument="api_key", env=cls.credential_env, provider=cls.kind)

    def _require_token(self) -> SecretStr:
        """The token given or found in the environment (remembered once found); AuthenticationError without."""
        token = self._token or self._credential()
        if token is None:
            raise AuthenticationError(
                "no Replicate API token: pass api_key= or set REPLICATE_API_TOKEN", provider=self.name
            )
        self._token = token
        return token

    def _auth_headers(self) -> dict[str, str]:
        return auth_header("Bearer", self._require_token())

    def _prepare_route(self, ctx: AttemptContext) -> str:
        """The model's, the version's or the deployment's predictions route."""
        return self._create_url

    def _download_headers(self, url: str) -> dict[str, str] | None:
        """The token for files on the API's own host or Replicate's file hosts; none elsewhere."""
        host = urlsplit(url).netloc
        return self._auth_headers() if host == self._api_host or _FILE_HOSTS.search(host) else None

    @classmethod
    def for_sandbox(cls, sandbox: SandboxEndpoints, **options: Any) -> ReplicateGenerator:
        return cls(api_key=SANDBOX_TOKEN, base_url=sandbox.url("replicate"), **options)

    @classmethod
    def sandbox_environment(cls, sandbox: SandboxEndpoints) -> dict[str, str]:
        return {"REPLICATE_API_TOKEN": SANDBOX_TOKEN, cls.BASE_URL_ENV: sandbox.url("replicate")}

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        _, rate = self.prices.replicate_rate(self.model)
        return rate.usd * self.PREDICT_PRIOR_S

    def __repr__(self) -> str:
        deployment = f", deployment={self.deployment!r}" if self.deployment else ""
        return f"ReplicateGenerator(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}{deployment})"

    # -- lifecycle --------------------------------------------------------------------------------

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        token = self._require_token()
        inputs = wire.inputs(ctx)
        with self._http.lease() as client:
            if len(inputs) == 1:
                done = [await self._prediction(ctx, client, token, inputs[0])]
            else:
                done = await self._concurrently(ctx, client, token, inputs)
        images: list[GeneratedImage] = []
        for item in done:
            for image in item.images:
                if image.format != ctx.request.output_format:
                    image = await asyncio.to_thread(convert_image, image, ctx.request.output_format)
                images.append(image.to_generated())
        first = done[0].prediction
        queue = [q for q in (wire.queue_s(d.prediction) for d in done) if q is not None]
        predict = [p for p in (wire.predict_time(d.prediction) for d in done) if p is not None]
        timings = Timings(
            queue_s=max(queue) if queue else None,
            inference_s=max(predict) if predict else None,
            download_s=max(d.download_s for d in done),
        )
        return ctx.result(images, model=self.model, seed=wire.seed_used(ctx, first), timings=timings)

    async def _concurrently(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, inputs: list[dict[str, Any]]
    ) -> list[_Done]:
        """Run several predictions at once; the first failure cancels the others (remotely too)."""
        tasks = [asyncio.ensure_future(self._prediction(ctx, client, token, payload)) for payload in inputs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        error = next((e for e in errors if e is not None), None)
        if error is None:
            return [t.result() for t in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise error

    async def _prediction(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, payload: dict[str, Any]
    ) -> _Done:
        """Create one prediction, wait for it, download its outputs; cancel it if abandoned."""
        prediction = await self._create(ctx, client, token, payload)
        pid = prediction["id"]
        ctx.job_started(pid)
        try:
            prediction = await self._wait(ctx, client, token, prediction)
            if prediction.get("status") != "succeeded" and prediction.get("status") in wire.TERMINAL:
                raise wire.job_error(prediction, provider=self.name)
            done = await self._collect(ctx, client, token, prediction)
        except (asyncio.CancelledError, LightningError) as exc:
            if isinstance(exc, LightningError):
                exc.request_id = exc.request_id or pid
            if prediction.get("status") in wire.TERMINAL:
                ctx.add_cost(self.pricing.cost(prediction))  # ended on its own: billed for what it ran
            else:
                await self._abandon(ctx, client, token, prediction)
            raise
        ctx.add_cost(self.pricing.cost(done.prediction))
        return done

    async def _create(
        self,
        ctx: AttemptContext,
        client: httpx.AsyncClient,
        token: SecretStr,
        payload: dict[str, Any],
        *,
        resent: int = 0,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": payload, **self.webhook_fields}
        if self._version is not None:
            body["version"] = self._version

        def prepare() -> tuple[dict[str, str], httpx.Timeout | None]:
            headers, read = wire.create_headers(token, ctx.remaining(), self.wait_s)
            return headers, None if read is None else self._read_timeout(read)

        sent_at = time.time()
        key = claims.sending(self.base_url, payload)
        post, answer = self._post_create(
            ctx,
            client,
            self._prepare_route(ctx),
            what="create prediction",
            prepare=prepare,
            json_body=body,
            on_answer=lambda response: claims.answered(key, ctx.attempt.attempt_id, response),
        )

        def recover() -> Coroutine[Any, Any, dict[str, Any] | Literal["absent"] | None]:
            """Find the prediction the create made (shielded and bounded: it runs while being cancelled)."""
            return shielded(
                self._recover(ctx, client, token, payload, sent_at, key, post),
                timeout=self.cancel_timeout_s,
                what="recovery",
            )

        try:
            response = await answer  # `post` runs on if we are cancelled: see below
        except asyncio.CancelledError:
            # Abandoned with the create in flight (deadline, cancelled task, e.g. during `Prefer: wait`):
            # find the prediction and cancel it; failing that, cancel it when the create answers.
            found = await recover()
            if not isinstance(found, dict):
                self._cancel_when_created(ctx, client, token, post)
            else:
                post.cancel()  # its answer is no longer needed
                ctx.job_started(found["id"])
                await self._abandon(ctx, client, token, found)
            pid = str(found["id"]) if isinstance(found, dict) else None
            if not expired(ctx.remaining()):
                raise
            # The deadline: report it here, where we know whether the prediction was found.
            raise GenerationTimeoutError(
                "deadline passed while creating the prediction"
                + (f"; prediction {pid} was found and cancelled" if pid else "; it may exist, so it is not re-sent"),
                provider=self.name,
                request_id=pid,
                outcome_unknown=pid is None,
            ) from None
        except LightningError as exc:
            if not exc.outcome_unknown:
                raise
            # The create may have made a prediction (a reset, or a gateway's 502/504): find it and adopt it,
            # so the request is served by the job already paid for. Sent again only when it is provably absent.
            found = await recover()
            if found == ABSENT and exc.status_code in ABSENT_AFTER:
                if resent < self.create_resend_limit and not expired(ctx.remaining()):
                    log.warning(
                        "create answered %s and no prediction of it is listed; sending it again", exc.status_code
                    )
                    ctx.create_resent()
                    return await self._create(ctx, client, token, payload, resent=resent + 1)
                exc.outcome_unknown = False
                exc.message = exc.message.replace("the job may have been created, so it is not re-sent", "")
                exc.message += "no prediction of it is listed, so none was created"
                ctx.add_cost(Cost(usd=0.0, basis="create failed and no prediction of it exists", estimated=False))
                raise
            if not isinstance(found, dict):
                self._cancel_when_created(ctx, client, token, post)
                raise
            log.warning("create answered %s; adopting prediction %s found in the list", exc.status_code, found["id"])
            return found

        async def abandon(pid: str) -> None:
            await self._abandon(ctx, client, token, {"id": pid, "status": "starting"})

        prediction = await self._created(
            ctx, response, what="create prediction", id_key="id", noun="prediction", abandon=abandon
        )
        log.debug("prediction %s created: %s", prediction["id"], prediction.get("status"))
        return prediction

    async def _recover(
        self,
        ctx: AttemptContext,
        client: httpx.AsyncClient,
        token: SecretStr,
        payload: dict[str, Any],
        sent_at: float,
        key: str,
        post: asyncio.Future[httpx.Response],
    ) -> dict[str, Any] | Literal["absent"] | None:
        """After a create with an unknown outcome: the prediction it made, claimed for this attempt, "absent"
        when provably none was made, else None (`recovery.find_created`)."""

        reads = self._reads(ctx)
        return await find_created(
            lambda: reads.run(lambda: self._list_predictions(client, token), what="list predictions"),
            base_url=self.base_url,
            payload=payload,
            sent_at=sent_at,
            key=key,
            attempt_id=ctx.attempt.attempt_id,
            answered=post.done(),
            settle_s=self.cancel_timeout_s / 2,
        )

    def _cancel_when_created(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, post: asyncio.Future[httpx.Response]
    ) -> None:
        """The attempt gave up on a create in flight: once it answers, cancel what it created.

        The late prediction's id and cost still reach the attempt's record (`AttemptContext.late_job`).
        """

        async def cancel(pid: str) -> None:
            final: dict[str, Any] | None = None
            try:
                final = await self._cancel(client, token, {"id": pid})
            except LightningError as exc:
                log.warning("cancel of late prediction %s failed: %s", pid, exc)
            ctx.late_job(pid, self.pricing.abandoned_cost(pid, final, {"id": pid, "status": "starting"}))

        self._cancel_when_answered(
            post,
            "id",
            cancel,
            warning="prediction %s was created after its attempt was abandoned; cancelling it",
            what="cancel of a late prediction",
            known=ctx.attempt.remote_ids,
            wait_s=wire.MAX_WAIT_S,
        )

    async def _get(self, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]) -> dict[str, Any]:
        return await self._call(client, token, prediction, "get", "GET", "", what="get prediction")

    async def _call(
        self,
        client: httpx.AsyncClient,
        token: SecretStr,
        prediction: dict[str, Any],
        link: str,
        method: str,
        suffix: str,
        *,
        what: str,
    ) -> dict[str, Any]:
        """Send to the prediction's `urls[link]` (else its API URL plus `suffix`) and return the JSON answer."""
        pid = prediction["id"]
        urls = prediction.get("urls")
        url = urls.get(link) if isinstance(urls, dict) else None
        response = await send(
            client,
            method,
            url if isinstance(url, str) else f"{self.base_url}/v1/predictions/{pid}{suffix}",
            provider=self.name,
            what=what,
            headers=auth_header("Bearer", token),
            request_id=pid,
        )
        return parse_json(response, provider=self.name, what=what, request_id=pid)

    async def _wait(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]
    ) -> dict[str, Any]:
        if wire.ready(prediction):  # a sync-mode create answered with the outputs: nothing to poll
            return prediction
        delays = PollDelays(self.poll_initial_s, self.poll_max_s)
        reads = self._reads(ctx)
        try:
            # Without a deadline, Replicate's own 30-minute limit (plus a margin) bounds the wait.
            async with async_timeout(None if ctx.deadline is not None else MAX_JOB_S):
                while not wire.ready(prediction):
                    await asyncio.sleep(delays.next(ctx.remaining()))
                    prediction = await reads.run(
                        functools.partial(self._get, client, token, prediction),
                        what=f"get prediction {prediction['id']}",
                    )
        except TIMEOUT_ERRORS:
            raise GenerationTimeoutError(
                f"prediction still {prediction.get('status')} after {MAX_JOB_S:.0f} s", provider=self.name
            ) from None
        return prediction

    async def _collect(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]
    ) -> _Done:
        """Download the outputs; when the prediction is not terminal yet, fetch its metrics meanwhile.

        Returns the prediction as last seen (with metrics when they arrived) for pricing.
        """
        pid = prediction["id"]
        urls = wire.output_urls(prediction, provider=self.name)
        started = time.monotonic()
        downloads = gather_all([self._download(ctx, client, url, pid) for url in urls])
        if prediction.get("status") == "succeeded":
            images = await downloads
        else:  # `processing` with outputs: terminal metrics usually follow within moments
            images, refreshed = await asyncio.gather(downloads, self._refresh(ctx, client, token, prediction))
            prediction = refreshed
        download_s = time.monotonic() - started
        requested = int(prediction.get("input", {}).get("num_outputs") or len(urls))
        if len(urls) < requested:
            ctx.warn(
                "ignored",
                "num_images",
                f"{requested - len(urls)} of {requested} images were withheld by the safety checker",
            )
        return _Done(prediction=prediction, images=list(images), download_s=download_s)

    async def _refresh(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            refreshed = await self._reads(ctx).run(
                lambda: self._get(client, token, prediction), what=f"get prediction {prediction['id']}"
            )
        except LightningError as exc:
            log.debug("refreshing prediction %s for its metrics failed: %s", prediction["id"], exc)
            return prediction
        return refreshed if refreshed.get("status") in ("processing", "succeeded") else prediction

    async def _download(self, ctx: AttemptContext, client: httpx.AsyncClient, url: str, pid: str) -> DecodedImage:
        image, seconds = await self._download_output(client, url, pid, headers=self._download_headers(url), ctx=ctx)
        log.debug("prediction %s: downloaded %s in %.1f ms", pid, url, seconds * 1e3)
        return image

    async def _abandon(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]
    ) -> None:
        """Cancel a prediction we no longer wait for and record what it cost, in one shielded, bounded step."""
        pid = prediction["id"]

        async def cancelled_cost() -> Cost:
            final = await shielded(
                self._cancel(client, token, prediction),
                timeout=self.cancel_timeout_s,
                what=f"cancel of prediction {pid}",
            )
            log.debug("prediction %s abandoned; cancel answered %s", pid, final and final.get("status"))
            return self.pricing.abandoned_cost(pid, final, prediction)

        await self._settle_abandoned(
            ctx, cancelled_cost(), timeout=self.cancel_timeout_s + 1.0, what=f"cancel of prediction {pid}"
        )

    async def _cancel(self, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]) -> dict[str, Any]:
        return await self._call(client, token, prediction, "cancel", "POST", "/cancel", what="cancel prediction")

    # -- recovery ---------------------------------------------------------------------------------

    async def afind_jobs(self, request: GenerationRequest, since: float, exclude: Collection[str] = ()) -> list[str]:
        """The predictions a create for `request` sent at `since` (epoch seconds) made, when its answer was
        lost with its process: listed predictions with its input, created since, not in `exclude` (ids
        other attempts recorded); oldest first, one per prediction the request needs."""
        token = self._require_token()
        ctx = AttemptContext(self, request)
        with self._http.lease() as client:
            listed = (await self._list_predictions(client, token)).get("results")
        return find_listed(listed, wire.inputs(ctx), since, exclude)

    async def _list_predictions(self, client: httpx.AsyncClient, token: SecretStr) -> dict[str, Any]:
        """The account's most recent predictions, as Replicate lists them (one page)."""
        response = await send(
            client,
            "GET",
            f"{self.base_url}/v1/predictions",
            provider=self.name,
            what="list predictions",
            headers=auth_header("Bearer", token),
        )
        return parse_json(response, provider=self.name, what="list predictions")

    async def arecover_job(self, job_id: str, request: GenerationRequest, *, wait: bool = False) -> RecoveredJob:
        """Prediction `job_id` (made for `request` by a process that is gone): its images when it
        finished, its error when it failed; one still running is cancelled unless `wait`. Never creates."""
        token = self._require_token()
        ctx = AttemptContext(self, request)
        with self._http.lease() as client:
            prediction = await self._reads(ctx).run(
                lambda: self._get(client, token, {"id": job_id}), what=f"get prediction {job_id}"
            )
            if not wire.ready(prediction):
                if not wait:
                    final: dict[str, Any] | None = None
                    try:
                        final = await self._cancel(client, token, prediction)
                    except LightningError as exc:
                        log.warning("cancel of recovered prediction %s failed: %s", job_id, exc)
                    return RecoveredJob(job_id, "canceled", self.pricing.abandoned_cost(job_id, final, prediction))
                prediction = await self._wait(ctx, client, token, prediction)
            if prediction.get("status") != "succeeded" and prediction.get("status") in wire.TERMINAL:
                return RecoveredJob(
                    job_id,
                    "failed",
                    self.pricing.cost(prediction),
                    error=wire.job_error(prediction, provider=self.name),
                )
            try:
                done = await self._collect(ctx, client, token, prediction)
            except LightningError as exc:
                return RecoveredJob(job_id, "failed", self.pricing.cost(prediction), error=exc)
        images = []
        for image in done.images:
            if image.format != request.output_format:
                image = await asyncio.to_thread(convert_image, image, request.output_format)
            images.append(image.to_generated())
        timings = Timings(
            queue_s=wire.queue_s(done.prediction),
            inference_s=wire.predict_time(done.prediction),
            download_s=done.download_s,
        )
        cost = self.pricing.cost(done.prediction)
        result = ctx.result(
            images, model=self.model, seed=wire.seed_used(ctx, done.prediction), timings=timings, cost=cost
        )
        result.request_id = job_id
        return RecoveredJob(job_id, "succeeded", cost, result=result)


def replicate_token(value: str | SecretStr | None = None) -> SecretStr | None:
    """The Replicate token: the argument, else REPLICATE_API_TOKEN (kept for compatibility)."""
    return ReplicateGenerator._credential(value)
