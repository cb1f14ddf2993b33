"""Acme: a hosted provider added by the checklist in docs/new-provider.md, as a test of it.

Acme's API is a plain job queue: `POST /v1/jobs` creates a job (`job_id`), `GET /v1/jobs/{id}` answers its
state (`queued`, `running`, `done`, `error`, `cancelled`) with its output URLs, seed and billed images, and
`POST /v1/jobs/{id}/cancel` cancels it. `AcmeGenerator` is the whole provider: the lifecycle template of
`HttpGenerator` with Acme's hooks filled in, its wire mapping and its pricing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from lightning_client.credentials import secret_from
from lightning_client.errors import (
    AuthenticationError,
    ContentFilteredError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from lightning_client.pricing import Price, PriceTable
from lightning_client.providers._http import (
    AttemptContext,
    Capabilities,
    HttpGenerator,
    ProviderOption,
    auth_header,
    env_setting,
)
from lightning_client.providers._http.generator import JobState, RemoteJob
from lightning_client.result import Cost
from lightning_client.sandbox_endpoints import SandboxEndpoints

DEFAULT_BASE_URL = "https://api.acme.example"
DEFAULT_MODEL = "acme/lightning-xl"
#: The key the sandbox accepts; not a secret.
SANDBOX_KEY = "acme-sandbox"
#: Acme bills per image delivered (its price list; a test provider's own).
PRICE = Price(usd=0.002, unit="image", source="acme price list", as_of="2026-01-01")

#: Acme's job states, as the template's.
_STATES: dict[str, JobState] = {
    "queued": "queued",
    "running": "running",
    "done": "succeeded",
    "error": "failed",
    "cancelled": "canceled",
}


class AcmeGenerator(HttpGenerator):
    """SDXL-Lightning on Acme's job queue (a test provider).

    Args:
        api_key: Acme key; default: ACME_API_KEY.
        base_url: API root; default: ACME_BASE_URL, else https://api.acme.example.
        model: the model to run (default `acme/lightning-xl`).
        name: what routers, ledgers and reports call it (default "acme").
    """

    kind = "acme"
    name = "acme"
    latency_prior_s = 1.0
    credential_env = ("ACME_API_KEY",)
    BASE_URL_ENV = "ACME_BASE_URL"
    sandboxed = True
    job_id_key = "job_id"
    options = (
        ProviderOption("model", "Model to run."),
        ProviderOption("base_url", "API root.", env="ACME_BASE_URL"),
    )

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        model: str | None = None,
        name: str | None = None,
        prices: PriceTable | None = None,
        timeout: float | httpx.Timeout = 30.0,
        max_connections: int = 64,
        poll_initial_s: float = 0.02,
        poll_max_s: float = 0.25,
        cancel_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            model=model or DEFAULT_MODEL,
            name=name,
            prices=prices,
            timeout=timeout,
            max_connections=max_connections,
            poll_initial_s=poll_initial_s,
            poll_max_s=poll_max_s,
            cancel_timeout_s=cancel_timeout_s,
        )
        self.base_url = (base_url or env_setting(self.BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self._key = secret_from(api_key, argument="api_key", env=self.credential_env, provider=self.kind)
        self._capabilities = Capabilities(
            native_steps=frozenset({1, 2, 4, 8}),
            min_side=256,
            max_side=1536,
            max_images=4,
            max_images_per_call=4,
            formats=frozenset({"png"}),
            converted_formats=frozenset({"jpeg", "webp"}),
        )

    @classmethod
    def for_sandbox(cls, sandbox: SandboxEndpoints, **options: Any) -> AcmeGenerator:
        return cls(api_key=SANDBOX_KEY, base_url=sandbox.url("acme"), **options)

    @classmethod
    def sandbox_environment(cls, sandbox: SandboxEndpoints) -> dict[str, str]:
        return {"ACME_API_KEY": SANDBOX_KEY, cls.BASE_URL_ENV: sandbox.url("acme")}

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        return PRICE.usd

    # -- the template's hooks: requests ----------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        key = self._key or secret_from(None, argument="api_key", env=self.credential_env, provider=self.kind)
        if key is None:
            raise AuthenticationError("no Acme key: pass api_key= or set ACME_API_KEY", provider=self.name)
        self._key = key
        return auth_header("Bearer", key)

    def _prepare_route(self, ctx: AttemptContext) -> str:
        return f"{self.base_url}/v1/jobs"

    def _prepare_payload(self, ctx: AttemptContext) -> dict[str, Any]:
        req = ctx.request
        return {
            "model": self.model,
            "prompt": req.prompt,
            "width": req.width,
            "height": req.height,
            "steps": req.steps,
            "seed": req.seed,
            "count": req.num_images,
        }

    def _status_route(self, job: RemoteJob) -> str:
        return f"{self.base_url}/v1/jobs/{quote(job.id, safe='')}"

    def _cancel_route(self, job: RemoteJob) -> str:
        return f"{self._status_route(job)}/cancel"

    # -- the template's hooks: answers -----------------------------------------------------------

    def _parse_status(self, job: RemoteJob, body: dict[str, Any]) -> JobState:
        state = _STATES.get(str(body.get("state")))
        if state is None:
            raise ProviderResponseError(
                f"unknown job state {body.get('state')!r}", provider=self.name, request_id=job.id, retryable=True
            )
        return state

    def _parse_error(self, job: RemoteJob, body: dict[str, Any]) -> LightningError:
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        code, message = str(error.get("code") or ""), str(error.get("message") or job.state)
        if code == "nsfw":
            return ContentFilteredError(f"job {job.state}: {message}", provider=self.name, request_id=job.id)
        if code == "internal" or job.state == "canceled":
            return ProviderUnavailableError(f"job {job.state}: {message}", provider=self.name, request_id=job.id)
        return ProviderResponseError(f"job {job.state}: {message}", provider=self.name, request_id=job.id)

    def _parse_outputs(self, job: RemoteJob, body: dict[str, Any]) -> Sequence[str]:
        outputs = body.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(u, str) for u in outputs):
            raise ProviderResponseError(
                "finished job has no output URLs", provider=self.name, request_id=job.id, retryable=True
            )
        return outputs

    def _parse_cost(self, ctx: AttemptContext, job: RemoteJob, body: dict[str, Any]) -> Cost:
        billed = body.get("billed_images")
        if not isinstance(billed, int) or isinstance(billed, bool):
            return Cost.unknown(f"Acme reported no billed images for job {job.id}")
        return Cost(
            usd=billed * PRICE.usd,
            basis=f"billed images {billed} x ${PRICE.usd:g}/{PRICE.unit} ({PRICE.source}, {PRICE.as_of})",
            estimated=False,
        )

    def _parse_seed(self, ctx: AttemptContext, body: dict[str, Any]) -> int:
        seed = body.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else ctx.request.seed

    def _parse_inference_s(self, body: dict[str, Any]) -> float | None:
        value = body.get("inference_s")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
