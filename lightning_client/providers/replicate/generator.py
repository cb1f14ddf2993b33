"""`ReplicateGenerator`: bytedance/sdxl-lightning-4step over Replicate's predictions HTTP API."""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger, mask_secrets
from lightning_client.credentials import secret_from
from lightning_client.errors import (
    AuthenticationError,
    ContentFilteredError,
    GenerationTimeoutError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from lightning_client.generator import (
    AttemptContext,
    Capabilities,
    ProviderOption,
    env_setting,
    legacy_arguments,
    renamed_argument,
)
from lightning_client.images import DecodedImage, convert_image, is_loopback_host
from lightning_client.pricing import PriceTable
from lightning_client.providers._http import (
    HttpGenerator,
    PollDelays,
    auth_header,
    expired,
    gather_all,
    parse_json,
    parse_timestamp,
    salvage_id,
    send,
    shielded,
)
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

#: Statuses after which a prediction never changes (`aborted` arrived with deadlines, 2025-10).
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: The model's schema allows num_outputs 1..4; larger requests are split over several predictions.
MAX_OUTPUTS = 4
#: The longest `Prefer: wait` Replicate honours.
MAX_WAIT_S = 60
#: Predictions time out after running 30 minutes; we stop waiting a minute later.
MAX_JOB_S = 31 * 60.0
#: Replicate's minimum `Cancel-After` (seconds from creation).
MIN_CANCEL_AFTER_S = 5
#: Seconds kept between the server-side `Prefer: wait` and our deadline, so the create answers before it.
_WAIT_MARGIN_S = 1.0
#: What `_recover` finds when the prediction is provably absent.
ABSENT: Literal["absent"] = "absent"
#: Create answers after which a prediction missing from the list was not made (the API answered; a
#: timeout such as 504 or 408 may still be creating it): the create is then sent again.
_ABSENT_AFTER = frozenset({500, 502})
#: Tolerated difference between our clock and Replicate's when matching a prediction to our create.
_CLOCK_SKEW_S = 30.0
#: Model inputs we set by default rather than from the request: provider options may replace them.
_DEFAULT_INPUTS = frozenset({"scheduler"})
_SEED_LOG = re.compile(r"Using seed:\s*(\d+)")
_NSFW = re.compile(r"nsfw", re.IGNORECASE)
#: Hosts that serve Replicate output files and may receive the token (the docs say downloads need it).
_FILE_HOSTS = re.compile(r"(^|\.)replicate\.delivery$")
#: The events a Replicate webhook can be sent for (`webhook_events_filter`).
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")


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
    _rate_cache: tuple[PriceTable, str, tuple[float, str, bool]] | None = None
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
        positional = legacy_arguments("ReplicateGenerator", legacy, ("api_key", "base_url", "model"))
        api_key = renamed_argument("ReplicateGenerator", "api_token", api_token, "api_key", api_key)
        api_key = positional.get("api_key", api_key)
        base_url = positional.get("base_url", base_url)
        model = positional.get("model", model)
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s must be from 0 to 60 seconds, got {wait_s}")
        self.webhook_fields = _webhook_fields(webhook, webhook_events)
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
            max_images_per_call=MAX_OUTPUTS,
            formats=frozenset({"png"}),
            converted_formats=frozenset({"jpeg", "webp"}),
            seed=True,
            negative_prompt=True,
            guidance=True,
        )

    @classmethod
    def _credential(cls, value: str | SecretStr | None = None) -> SecretStr | None:
        return secret_from(value, argument="api_key", env=cls.credential_env, provider=cls.kind)

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

    # -- request mapping --------------------------------------------------------------------------

    def _inputs(self, ctx: AttemptContext) -> list[dict[str, Any]]:
        """One model input per prediction; prediction k of a split request uses seed + k."""
        req = ctx.request
        counts = [min(MAX_OUTPUTS, req.num_images - start) for start in range(0, req.num_images, MAX_OUTPUTS)]
        if len(counts) > 1:
            ctx.warn(
                "emulated",
                "num_images",
                f"split into {len(counts)} concurrent predictions of at most {MAX_OUTPUTS} images; "
                "prediction k uses seed + k",
            )
        inputs = []
        for k, count in enumerate(counts):
            payload: dict[str, Any] = {
                "prompt": req.prompt,
                # Sent even when empty: the model's default ("worst quality, low quality") would otherwise
                # apply silently whenever guidance_scale > 1.
                "negative_prompt": req.negative_prompt or "",
                "width": req.width,
                "height": req.height,
                "num_outputs": count,
                "num_inference_steps": req.steps,
                "guidance_scale": req.guidance_scale,
                "seed": (req.seed + k) % 2**32,
                "scheduler": "K_EULER",
                "disable_safety_checker": not req.safety_checker,
            }
            inputs.append(payload)
        extra, refused = req.extra_options("replicate", inputs[0].keys() - _DEFAULT_INPUTS)
        for key in refused:
            ctx.warn(
                "ignored",
                f"provider_options.replicate.{key}",
                "a validated field sets it; the request's value was sent",
            )
        return [{**payload, **extra} for payload in inputs]

    def _create_headers(self, token: SecretStr, remaining: float | None) -> tuple[dict[str, str], float | None]:
        """Headers for a create, and the read timeout it needs (None: the client default)."""
        headers = auth_header("Bearer", token)
        wait = self.wait_s if remaining is None else min(self.wait_s, math.floor(remaining - _WAIT_MARGIN_S))
        read: float | None = None
        if wait >= 1:
            headers["Prefer"] = f"wait={wait}"
            read = wait + 5.0
        if remaining is not None and remaining >= MIN_CANCEL_AFTER_S:
            # Server-side backstop for our own cancel; below the minimum only our cancel applies.
            headers["Cancel-After"] = f"{math.ceil(remaining)}s"
        return headers, read

    # -- lifecycle --------------------------------------------------------------------------------

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        token = self._token or self._credential()
        if token is None:
            raise AuthenticationError(
                "no Replicate API token: pass api_key= or set REPLICATE_API_TOKEN", provider=self.name
            )
        self._token = token
        inputs = self._inputs(ctx)
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
        queue = [q for q in (self._queue_s(d.prediction) for d in done) if q is not None]
        predict = [p for p in (self._predict_time(d.prediction) for d in done) if p is not None]
        timings = Timings(
            queue_s=max(queue) if queue else None,
            inference_s=max(predict) if predict else None,
            download_s=max(d.download_s for d in done),
        )
        return ctx.result(images, model=self.model, seed=self._seed_used(ctx, first), timings=timings)

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
            if prediction.get("status") != "succeeded" and prediction.get("status") in TERMINAL:
                raise self._job_error(prediction)
            done = await self._collect(ctx, client, token, prediction)
        except (asyncio.CancelledError, LightningError) as exc:
            if isinstance(exc, LightningError):
                exc.request_id = exc.request_id or pid
            if prediction.get("status") in TERMINAL:
                ctx.add_cost(self._cost(prediction))  # ended on its own: billed for what it ran
            else:
                await self._abandon(ctx, client, token, prediction)
            raise
        ctx.add_cost(self._cost(done.prediction))
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
            headers, read = self._create_headers(token, ctx.remaining())
            return headers, None if read is None else self._read_timeout(read)

        sent_at = time.time()
        key = _claims.sending(self.base_url, payload)
        post, answer = self._post_create(
            ctx,
            client,
            self._create_url,
            what="create prediction",
            prepare=prepare,
            json_body=body,
            on_answer=lambda response: _claims.answered(key, ctx.attempt.attempt_id, response),
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
            if found == ABSENT and exc.status_code in _ABSENT_AFTER:
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
        """After a create with an unknown outcome: the prediction it made, claimed for this attempt; "absent"
        when the create has answered and two listings, the second a moment later, hold none of its input;
        else None.

        Replicate predictions carry no field of ours to match on, so a listed prediction is ours when it
        has our input (seed included: it is drawn per request unless the caller fixes it), was created
        since we sent, and is claimed by no other attempt of this process. `_claims` records the
        prediction every answered create made, and waits for like creates still in flight, so two
        identical concurrent requests never claim (or cancel) each other's prediction.
        """

        async def list_once() -> dict[str, Any]:
            response = await send(
                client,
                "GET",
                f"{self.base_url}/v1/predictions",
                provider=self.name,
                what="list predictions",
                headers=auth_header("Bearer", token),
            )
            return parse_json(response, provider=self.name, what="list predictions")

        answered = post.done()
        await _claims.settled(key, self.cancel_timeout_s / 2, own_in_flight=not answered)
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(0.25)  # the create may still be on its way to the server
            page = await self._reads(ctx).run(list_once, what="list predictions")
            listed = page.get("results")
            listed = listed if isinstance(listed, list) else []
            if page.get("next") and not _reaches_back(listed, sent_at):
                answered = False  # a full page of newer predictions: ours may be on a later one
            candidates = [p for p in listed if _made_by(p, payload, sent_at)]
            # Oldest first: the first prediction made after our create was sent is the likeliest to be ours.
            candidates.sort(key=lambda p: str(p.get("created_at")))
            for prediction in candidates:
                if _claims.claim(self.base_url, str(prediction["id"]), ctx.attempt.attempt_id):
                    log.warning("create outcome was unknown; found prediction %s", prediction["id"])
                    return dict(prediction)
            if candidates:  # like predictions, all claimed by other attempts: ours may still appear
                answered = False
        return ABSENT if answered else None

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
            ctx.late_job(pid, self._abandoned_cost(pid, final, {"id": pid, "status": "starting"}))

        self._cancel_when_answered(
            post,
            "id",
            cancel,
            warning="prediction %s was created after its attempt was abandoned; cancelling it",
            what="cancel of a late prediction",
            known=ctx.attempt.remote_ids,
            wait_s=MAX_WAIT_S,
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
        if _ready(prediction):  # a sync-mode create answered with the outputs: nothing to poll
            return prediction
        delays = PollDelays(self.poll_initial_s, self.poll_max_s)
        reads = self._reads(ctx)
        try:
            # Without a deadline, Replicate's own 30-minute limit (plus a margin) bounds the wait.
            async with async_timeout(None if ctx.deadline is not None else MAX_JOB_S):
                while not _ready(prediction):
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
        output = prediction.get("output")
        if prediction.get("data_removed") or output is None:
            raise ProviderResponseError(
                "the prediction's outputs were removed (data_removed) before they were downloaded",
                provider=self.name,
                request_id=pid,
                retryable=True,
            )
        urls = [output] if isinstance(output, str) else output
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ProviderResponseError(
                f"unexpected output shape: {type(output).__name__}", provider=self.name, request_id=pid, retryable=True
            )
        if not urls:
            raise ContentFilteredError(
                "the prediction returned no images (all withheld by the safety checker)",
                provider=self.name,
                request_id=pid,
            )
        started = time.monotonic()
        downloads = gather_all([self._download(ctx, client, token, url, pid) for url in urls])
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

    async def _download(
        self, ctx: AttemptContext, client: httpx.AsyncClient, token: SecretStr, url: str, pid: str
    ) -> DecodedImage:
        host = urlsplit(url).netloc
        headers = auth_header("Bearer", token) if host == self._api_host or _FILE_HOSTS.search(host) else None
        image, seconds = await self._download_output(client, url, pid, headers=headers, ctx=ctx)
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
            return self._abandoned_cost(pid, final, prediction)

        await self._settle_abandoned(
            ctx, cancelled_cost(), timeout=self.cancel_timeout_s + 1.0, what=f"cancel of prediction {pid}"
        )

    def _abandoned_cost(self, pid: str, final: dict[str, Any] | None, last: dict[str, Any]) -> Cost:
        """The cost of a prediction we cancelled: from the cancel's answer; unknown when the cancel failed
        on a prediction that had not ended (it may run to the end and be billed)."""
        if final is not None:
            return self._cost(final)
        if last.get("status") in TERMINAL:
            return self._cost(last)
        return Cost.unknown(f"cancel of prediction {pid} failed: it may run and be billed")

    async def _cancel(self, client: httpx.AsyncClient, token: SecretStr, prediction: dict[str, Any]) -> dict[str, Any]:
        return await self._call(client, token, prediction, "cancel", "POST", "/cancel", what="cancel prediction")

    # -- recovery ---------------------------------------------------------------------------------

    async def afind_jobs(self, request: GenerationRequest, since: float, exclude: Collection[str] = ()) -> list[str]:
        """The predictions a create for `request` sent at `since` (epoch seconds) made, when its answer was
        lost with its process: listed predictions with its input, created since, not in `exclude` (ids
        other attempts recorded); oldest first, one per prediction the request needs."""
        token = self._token or self._credential()
        if token is None:
            raise AuthenticationError(
                "no Replicate API token: pass api_key= or set REPLICATE_API_TOKEN", provider=self.name
            )
        ctx = AttemptContext(self, request)
        with self._http.lease() as client:
            response = await send(
                client,
                "GET",
                f"{self.base_url}/v1/predictions",
                provider=self.name,
                what="list predictions",
                headers=auth_header("Bearer", token),
            )
        listed = parse_json(response, provider=self.name, what="list predictions").get("results")
        found: list[str] = []
        for payload in self._inputs(ctx):
            candidates = [
                p
                for p in (listed if isinstance(listed, list) else ())
                if _made_by(p, payload, since) and p["id"] not in exclude and p["id"] not in found
            ]
            candidates.sort(key=lambda p: str(p.get("created_at")))
            if candidates:
                found.append(str(candidates[0]["id"]))
        return found

    async def arecover_job(self, job_id: str, request: GenerationRequest, *, wait: bool = False) -> RecoveredJob:
        """Prediction `job_id` (made for `request` by a process that is gone): its images when it
        finished, its error when it failed; one still running is cancelled unless `wait`. Never creates."""
        token = self._token or self._credential()
        if token is None:
            raise AuthenticationError(
                "no Replicate API token: pass api_key= or set REPLICATE_API_TOKEN", provider=self.name
            )
        ctx = AttemptContext(self, request)
        with self._http.lease() as client:
            prediction = await self._reads(ctx).run(
                lambda: self._get(client, token, {"id": job_id}), what=f"get prediction {job_id}"
            )
            if not _ready(prediction):
                if not wait:
                    final: dict[str, Any] | None = None
                    try:
                        final = await self._cancel(client, token, prediction)
                    except LightningError as exc:
                        log.warning("cancel of recovered prediction %s failed: %s", job_id, exc)
                    return RecoveredJob(job_id, "canceled", self._abandoned_cost(job_id, final, prediction))
                prediction = await self._wait(ctx, client, token, prediction)
            if prediction.get("status") != "succeeded" and prediction.get("status") in TERMINAL:
                return RecoveredJob(job_id, "failed", self._cost(prediction), error=self._job_error(prediction))
            try:
                done = await self._collect(ctx, client, token, prediction)
            except LightningError as exc:
                return RecoveredJob(job_id, "failed", self._cost(prediction), error=exc)
        images = []
        for image in done.images:
            if image.format != request.output_format:
                image = await asyncio.to_thread(convert_image, image, request.output_format)
            images.append(image.to_generated())
        timings = Timings(
            queue_s=self._queue_s(done.prediction),
            inference_s=self._predict_time(done.prediction),
            download_s=done.download_s,
        )
        cost = self._cost(done.prediction)
        result = ctx.result(
            images, model=self.model, seed=self._seed_used(ctx, done.prediction), timings=timings, cost=cost
        )
        result.request_id = job_id
        return RecoveredJob(job_id, "succeeded", cost, result=result)

    # -- response mapping -------------------------------------------------------------------------

    def _job_error(self, prediction: dict[str, Any]) -> LightningError:
        pid, status = prediction["id"], prediction.get("status")
        error = mask_secrets(str(prediction.get("error") or ""))
        if status == "failed":
            if _NSFW.search(error):
                return ContentFilteredError(f"prediction failed: {error}", provider=self.name, request_id=pid)
            # Input errors are rejected at create (422); a prediction that fails later may succeed when re-run.
            return ProviderResponseError(
                f"prediction failed: {error or 'no error message'}", provider=self.name, request_id=pid, retryable=True
            )
        if status == "aborted":
            return GenerationTimeoutError(
                "prediction aborted: its deadline passed before it started (not charged)",
                provider=self.name,
                request_id=pid,
            )
        return ProviderUnavailableError(
            "prediction was canceled by the provider (or its Cancel-After deadline)", provider=self.name, request_id=pid
        )

    @staticmethod
    def _predict_time(prediction: dict[str, Any]) -> float | None:
        metrics = prediction.get("metrics")
        value = metrics.get("predict_time") if isinstance(metrics, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @staticmethod
    def _queue_s(prediction: dict[str, Any]) -> float | None:
        created, started = parse_timestamp(prediction.get("created_at")), parse_timestamp(prediction.get("started_at"))
        return None if created is None or started is None else max(0.0, (started - created).total_seconds())

    def _cost(self, prediction: dict[str, Any]) -> Cost:
        """`predict_time` x the hardware's $/s; aborted or never-started predictions cost nothing."""
        status = prediction.get("status")
        if status == "aborted":
            return Cost(usd=0.0, basis="aborted before start: not charged", estimated=False)
        usd_per_s, source, assumed_sku = self._rate()
        seconds = self._predict_time(prediction)
        if seconds is not None:
            return Cost(
                usd=seconds * usd_per_s,
                basis=f"predict_time {seconds:.3f} s x ${usd_per_s:.6f}/s ({source})",
                estimated=assumed_sku,
            )
        started = parse_timestamp(prediction.get("started_at"))
        if started is None:
            return Cost(usd=0.0, basis=f"prediction {status or 'unknown'} before start: not charged", estimated=False)
        ended = parse_timestamp(prediction.get("completed_at"))
        seconds = ((ended.timestamp() if ended else time.time()) - started.timestamp()) if started else 0.0
        seconds = max(0.0, seconds)
        return Cost(
            usd=seconds * usd_per_s,
            basis=f"~{seconds:.3f} s since started_at (no predict_time) x ${usd_per_s:.6f}/s ({source})",
            estimated=True,
        )

    def _rate(self) -> tuple[float, str, bool]:
        """$/s of the model's hardware, where that price is from, and whether the hardware is assumed.

        Remembered for the generator's price table and model (both are read on every request).
        """
        cached = self._rate_cache
        if cached is not None and cached[0] is self.prices and cached[1] == self.model:
            return cached[2]
        sku, price = self.prices.replicate_rate(self.model)
        source = f"{sku}, {price.source.removeprefix('https://').removeprefix('http://')} {price.as_of}"
        rate = (price.usd, source, self.model.split(":")[0] not in self.prices.replicate_hardware_confirmed)
        self._rate_cache = (self.prices, self.model, rate)
        return rate

    def _seed_used(self, ctx: AttemptContext, prediction: dict[str, Any]) -> int:
        """The seed the model logged (`Using seed: N`); a mismatch with the request is a warning."""
        logs = prediction.get("logs")
        match = _SEED_LOG.search(logs) if isinstance(logs, str) else None
        if match is None:
            return ctx.request.seed
        seed = int(match.group(1))
        if seed != ctx.request.seed:
            ctx.warn("ignored", "seed", f"requested seed {ctx.request.seed} but the model logged 'Using seed: {seed}'")
        return seed


def _webhook_fields(webhook: str | None, events: Sequence[str] | None) -> dict[str, Any]:
    """The create body's webhook fields; bad values raise ValueError naming the option and what is allowed."""
    if webhook is None:
        if events is not None:
            raise ValueError("webhook_events needs webhook (the URL the events are sent to)")
        return {}
    parts = urlsplit(webhook) if isinstance(webhook, str) else None
    if (
        parts is None
        or not parts.hostname
        or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)))
    ):
        raise ValueError(f"webhook must be an https:// URL (http:// only to a loopback host), got {webhook!r}")
    fields: dict[str, Any] = {"webhook": webhook}
    if events is not None:
        chosen = [events] if isinstance(events, str) else list(events)
        unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
        if unknown or not chosen:
            raise ValueError(
                f"webhook_events must be a non-empty subset of {', '.join(WEBHOOK_EVENTS)}; got {chosen!r}"
            )
        fields["webhook_events_filter"] = list(dict.fromkeys(chosen))
    return fields


class _Claims:
    """Which attempt of this process owns which prediction, and which creates are still unanswered.

    Every answered create records the prediction it made for its attempt; a recovery claims a listed
    prediction only when no other attempt owns it. Creates with the same prompt and seed still in flight
    are waited for first, since their predictions are listed before their answers name them.
    """

    _KEEP = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._in_flight: Counter[str] = Counter()

    def sending(self, base_url: str, payload: dict[str, Any]) -> str:
        """Note a create about to be sent; returns the key of its input.

        The key holds the prompt and seed only: creates that share them are waited for together,
        a superset of the identical ones, which costs a recovery a little waiting and no JSON
        encoding per create.
        """
        key = f"{base_url} {payload.get('seed')} {payload.get('prompt')}"
        with self._lock:
            self._in_flight[key] += 1
        return key

    def answered(self, key: str, attempt_id: str, response: httpx.Response | None) -> None:
        """The create of `key` answered (None: it failed): record the prediction it names for its attempt."""
        pid = None if response is None else salvage_id(response.content, "id")
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]
            if pid is not None:
                self._own(key.split(" ", 1)[0] + " " + pid, attempt_id)

    async def settled(self, key: str, timeout: float, *, own_in_flight: bool) -> None:
        """Wait (up to `timeout`) until no other create with this input is unanswered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                others = self._in_flight.get(key, 0) - int(own_in_flight)
            if others <= 0:
                return
            await asyncio.sleep(0.05)

    def claim(self, base_url: str, pid: str, attempt_id: str) -> bool:
        """Make `attempt_id` the owner of prediction `pid` at `base_url` unless another attempt already is;
        True when it owns it."""
        with self._lock:
            return self._own(base_url + " " + pid, attempt_id) == attempt_id

    def _own(self, where: str, attempt_id: str) -> str:
        owner = self._owners.setdefault(where, attempt_id)
        while len(self._owners) > self._KEEP:
            self._owners.popitem(last=False)
        return owner


_claims = _Claims()


def _made_by(prediction: Any, payload: dict[str, Any], sent_at: float) -> bool:
    """Whether a listed prediction is the one our create made: same input, created since we sent it."""
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        return False
    created = parse_timestamp(prediction.get("created_at"))
    echoed = prediction.get("input")
    return (
        created is not None
        and created.timestamp() >= sent_at - _CLOCK_SKEW_S
        and isinstance(echoed, dict)
        and all(echoed.get(key) == value for key, value in payload.items())
    )


def _reaches_back(listed: list[Any], sent_at: float) -> bool:
    """Whether a page of predictions (newest first) goes back to before our create was sent."""
    created = [parse_timestamp(p.get("created_at")) for p in listed if isinstance(p, dict)]
    return any(c is not None and c.timestamp() < sent_at - _CLOCK_SKEW_S for c in created)


def _ready(prediction: dict[str, Any]) -> bool:
    """Terminal, or `processing` with outputs already present (sync-mode file outputs)."""
    status = prediction.get("status")
    return status in TERMINAL or (status == "processing" and bool(prediction.get("output")))


def replicate_token(value: str | SecretStr | None = None) -> SecretStr | None:
    """The Replicate token: the argument, else REPLICATE_API_TOKEN (kept for compatibility)."""
    return ReplicateGenerator._credential(value)
