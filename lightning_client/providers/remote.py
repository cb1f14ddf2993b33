"""`RemoteGenerator`: a generator served by `lightning-client serve`, over its native `/v1/generations`.

Capabilities and the expected wait come from the server's `/v1/status` (cached briefly, and
refreshed from the `X-Expected-Wait-S` header of every answer); timings, cost and warnings come
from the server's result; its errors map back to the same classes of the taxonomy. The job id
is chosen here and sent as `X-Request-Id`, so it is recorded before the request is sent, and
the server stores it in its own ledger rows (`client_request_id`), so the two ledgers join.
Cancelling a call closes its connection, which makes the server cancel the generation.

The server is given a deadline a margin shorter than the call's own, so it finishes abandoning
its upstream job (and reports that job's cost) before this side stops waiting. An answer saying
`outcome_unknown` (an upstream job may exist and be billed) becomes an attempt with outcome
"unknown" and an unknown cost, which a router never sends to this server again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from lightning_client._log import get_logger
from lightning_client.credentials import secret_from
from lightning_client.errors import (
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
)
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities, as_request
from lightning_client.providers._http import (
    ERROR_CODES,
    HttpClients,
    answer_may_have_created,
    create_refused,
    error_from_response,
    make_timeout,
    parse_retry_after,
    send,
    transport_error,
)
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GenerationResult
from lightning_client.telemetry import trace_headers

__all__ = ["API_KEY_VARIABLE", "DEADLINE_MARGIN_S", "RemoteGenerator", "server_deadline"]

log = get_logger("lightning_client.providers.remote")

#: Where `RemoteGenerator` reads its bearer key when none is given.
API_KEY_VARIABLE = "LIGHTNING_CLIENT_API_KEY"
#: The server's response header with its expected wait (seconds).
EXPECTED_WAIT_HEADER = "x-expected-wait-s"
#: Longest a first call waits to learn the server's capabilities before sending anyway.
_CAPABILITIES_WAIT_S = 2.0
#: Extra read time beyond the request's deadline (the call's own deadline ends the wait first).
_READ_MARGIN_S = 2.0
#: The server's deadline ends at most this much before the call's (a quarter of the time left, when less).
DEADLINE_MARGIN_S = 2.0


class RemoteGenerator(BaseGenerator):
    """A `lightning-client serve` server as a generator.

    Args:
        base_url: the server, e.g. "http://gpu-box:8000" (without /v1).
        api_key: its bearer key (default: `LIGHTNING_CLIENT_API_KEY`; none: no auth header).
        name: the name routers and the ledger use.
        timeout: read timeout in seconds for calls without a deadline.
        status_ttl_s: how long the server's expected wait is reused before `/v1/status` is asked again.
        capabilities: what the server serves, when known up front (else fetched from it).
        deadline_margin_s: how much sooner the server's deadline ends than the call's, so that it can
            cancel its upstream job and report it (capped at a quarter of the time left).
    """

    kind = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | SecretStr | None = None,
        name: str = "remote",
        timeout: float = 300.0,
        max_connections: int = 64,
        status_ttl_s: float = 1.0,
        capabilities: Capabilities | None = None,
        deadline_margin_s: float = DEADLINE_MARGIN_S,
    ) -> None:
        if not deadline_margin_s >= 0:
            raise InvalidRequestError(
                f"deadline_margin_s={deadline_margin_s!r} is invalid; allowed: seconds >= 0", field="deadline_margin_s"
            )
        if not base_url.startswith(("http://", "https://")):
            raise InvalidRequestError(f"base_url={base_url!r} is invalid; allowed: an http(s) URL", field="base_url")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._api_key = secret_from(api_key, argument="api_key", env=(API_KEY_VARIABLE,), provider=self.kind)
        self.name = self._check_name(name)
        self.model = "remote"
        self.status_ttl_s = status_ttl_s
        self.deadline_margin_s = deadline_margin_s
        self._http = HttpClients(timeout=make_timeout(timeout), max_connections=max_connections)
        self._capabilities = capabilities
        self._wait: float | None = None
        self._wait_at = float("-inf")

    @property
    def capabilities(self) -> Capabilities:
        """The server's capabilities (permissive defaults until they are fetched)."""
        return self._capabilities or Capabilities()

    def expected_wait_s(self) -> float | None:
        """The server's last reported expected wait; None when unknown or older than `status_ttl_s`."""
        if time.monotonic() - self._wait_at > self.status_ttl_s:
            return None
        return self._wait

    async def refresh_expected_wait(self) -> None:
        """Ask `/v1/status` for the expected wait and capabilities, unless the cached figure is fresh."""
        if self._capabilities is not None and time.monotonic() - self._wait_at <= self.status_ttl_s:
            return
        client = self._http.get()
        try:
            response = await send(
                client,
                "GET",
                f"{self.base_url}/v1/status",
                provider=self.name,
                what="status",
                headers=self._headers(),
                timeout=make_timeout(5.0),
            )
            status = json.loads(response.content)
            if "capabilities" in status:
                self._capabilities = Capabilities.model_validate(status["capabilities"])
            self._note_wait(status.get("expected_wait_s"))
        except (LightningError, ValueError, ValidationError) as exc:
            log.debug("%s: status unavailable: %s", self.name, exc)
            self._wait, self._wait_at = None, float("-inf")

    async def agenerate(self, request: GenerationRequest | str | None = None, **fields: Any) -> GenerationResult:
        req = as_request(request, fields)
        if self._capabilities is None:
            client_wait = (
                _CAPABILITIES_WAIT_S if req.timeout_s is None else min(_CAPABILITIES_WAIT_S, req.timeout_s / 4)
            )
            try:
                await asyncio.wait_for(self.refresh_expected_wait(), client_wait)
            except asyncio.TimeoutError:
                pass  # the server validates the request itself
        return await super().agenerate(req)

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        request_id = uuid.uuid4().hex
        ctx.job_started(request_id)
        body = ctx.request.model_dump(mode="json")
        remaining = ctx.remaining()
        if remaining is not None:
            body["timeout_s"] = server_deadline(remaining, self.deadline_margin_s)
        timeout = None if remaining is None else make_timeout(remaining + _READ_MARGIN_S)
        try:
            with self._http.lease() as client:
                response = await client.post(
                    f"{self.base_url}/v1/generations",
                    json=body,
                    headers={**self._headers(), "X-Request-Id": request_id},
                    timeout=client.timeout if timeout is None else timeout,
                )
        except httpx.HTTPError as exc:
            error = transport_error(self.name, exc, what="generation", request_id=request_id, creates=True)
            if error.outcome_unknown:
                ctx.add_cost(Cost.unknown("no answer from the server: an upstream job may exist and be billed"))
            raise error from None
        self._note_wait(response.headers.get(EXPECTED_WAIT_HEADER))
        if not response.is_success:
            raise _error(ctx, response, request_id)
        try:
            served = GenerationResult.model_validate_json(response.content)
        except ValidationError as exc:
            ctx.add_cost(Cost.unknown("the server's result could not be read: its upstream job may be billed"))
            raise ProviderResponseError(
                f"the server's result is not a GenerationResult: {exc.errors()[0].get('msg')}",
                provider=self.name,
                status_code=response.status_code,
                request_id=request_id,
                outcome_unknown=True,
            ) from None
        ctx.warnings = list(served.warnings)
        ctx.attempt.note = f"served by {served.provider}" + (f" (job {served.request_id})" if served.request_id else "")
        ctx.attempt.served_by = served.served_by
        result = ctx.result(
            served.images, model=served.model, seed=served.seed, timings=served.timings, cost=served.cost
        )
        result.served_by = served.served_by
        return result

    def _headers(self) -> dict[str, str]:
        if self._api_key is None:
            return trace_headers()
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}", **trace_headers()}

    def _note_wait(self, value: Any) -> None:
        try:
            wait = None if value is None else float(value)
        except (TypeError, ValueError):
            return
        self._wait, self._wait_at = wait, time.monotonic()

    async def _close(self) -> None:
        await self._http.aclose()

    def _close_all(self) -> None:
        self._http.close_all()

    def __repr__(self) -> str:
        return f"RemoteGenerator({self.base_url!r}, name={self.name!r})"


def server_deadline(remaining: float, margin_s: float) -> float:
    """The `timeout_s` sent to the server for a call with `remaining` seconds left: `margin_s` sooner (at most
    a quarter of what is left), so the server's deadline, and its cleanup, end before the call's."""
    return max(remaining - min(margin_s, remaining / 4), 0.001)


def _error(ctx: AttemptContext, response: httpx.Response, request_id: str) -> LightningError:
    """The server's OpenAI-shaped error as the taxonomy class it names (else mapped by status).

    The cost the server reports joins the attempt; an `outcome_unknown` answer leaves it unknown.
    """
    provider = ctx.provider
    try:
        error = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict) or error.get("code") not in ERROR_CODES:
        # Not the server's own answer (a proxy's, say): a 5xx other than 503 may hide a job that runs on.
        plain = error_from_response(provider, response, request_id=request_id, what="generation")
        if answer_may_have_created(response.status_code) and not create_refused(response):
            plain.outcome_unknown, plain.retryable = True, False
            ctx.add_cost(Cost.unknown(f"the server's answer was HTTP {response.status_code}: a job may be billed"))
        return plain
    cls = ERROR_CODES[str(error["code"])]
    message = f"server answered HTTP {response.status_code}: {error.get('message', '')}"
    unknown = error.get("outcome_unknown") is True
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status_code": response.status_code,
        "request_id": request_id,
        "retry_after": parse_retry_after(response),
        "outcome_unknown": unknown,
    }
    if isinstance(error.get("retryable"), bool):
        kwargs["retryable"] = error["retryable"] and not unknown
    elif unknown:
        kwargs["retryable"] = False
    try:
        cost = None if error.get("cost") is None else Cost.model_validate(error["cost"])
    except ValidationError:
        cost = Cost.unknown("the server reported a cost that could not be read")
    if cost is not None:
        ctx.add_cost(cost)
    if unknown:
        job = error.get("job_id")
        ctx.attempt.note = "the server reports an upstream job that may exist" + (
            f" (job {job})" if isinstance(job, str) and job else ""
        )
        if not ctx.cost.is_unknown:
            ctx.add_cost(Cost.unknown("the server reports an upstream job that may exist and be billed"))
    if cls is InvalidRequestError:
        return InvalidRequestError(message, field=error.get("param"), **kwargs)
    return cls(message, **kwargs)
