"""The Replicate emulator: predictions API v1 for `bytedance/sdxl-lightning-4step` plus a file host.

Wire facts (status codes, bodies, headers, sync mode, deadlines, retention) follow the project's Replicate
reference; the comments say where a choice had to be made.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lightning_client.images import is_loopback_url
from lightning_client.testing._behaviour import REPLICATE_RULES, Behaviour
from lightning_client.testing._jobs import Job, JobState, wait_event
from lightning_client.testing._provider import (
    ProviderCore,
    dumps,
    gateway_error,
    hang,
    json_response,
    reset_connection,
)
from lightning_client.testing._render import ImageSpec
from lightning_client.testing._replicate_schema import (
    MODEL,
    OPENAPI_SCHEMA,
    VERSION,
    ignored_input_warning,
    validate_input,
    validation_detail,
)
from lightning_client.testing._webhooks import ReplicateSigner, webhook_id

__all__ = ["NSFW_ERROR", "ReplicateEmulation", "replicate_finisher", "replicate_progress"]

#: The failure text when the safety checker drops every image. The model's Cog wrapper has used two
#: wordings over time ("NSFW content detected. Try running it again, or try a different prompt." in the
#: older predict.py); this is the current one, and both contain "NSFW".
NSFW_ERROR = "All generated images contained NSFW content. Try running it again with a different prompt."
JOB_ERROR = "RuntimeError: CUDA error: an illegal memory access was encountered (sandbox fault 'job_error')"
PAGE_SIZE = 100
MAX_WAIT_S = 60
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_STATUS = {"queued": "starting", "running": "processing"}
_RATELIMIT = {"create": "599", "get": "59999"}  # recorded ratelimit-remaining values; others see 2999
_PREFER = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_TOP_LEVEL = {"version", "input", "webhook", "webhook_completed", "webhook_events_filter", "stream"}
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
#: Without `webhook_events_filter` a webhook fires on new outputs and on completion.
DEFAULT_WEBHOOK_EVENTS = ("output", "completed")
#: `output` and `logs` deliveries come at most this often.
WEBHOOK_THROTTLE_S = 0.5
_VERSION_CREATED_AT = "2024-02-21T05:09:28.543942Z"
_MODEL_FACTS = {
    "url": f"https://replicate.com/{MODEL}",
    "owner": MODEL.split("/")[0],
    "name": MODEL.split("/")[1],
    "description": "SDXL-Lightning by ByteDance: a fast text-to-image model that makes high-quality images in 4 steps",
    "visibility": "public",
    "github_url": "https://github.com/lucataco/cog-sdxl-lightning-4step",
    "paper_url": "https://arxiv.org/abs/2402.13929",
    "license_url": "https://huggingface.co/ByteDance/SDXL-Lightning/blob/main/LICENSE.md",
    "cover_image_url": None,
    "default_example": None,
}

_ERRORS: dict[int, dict[str, Any]] = {
    401: {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401},
    402: {
        "title": "Billing required",
        "detail": "You need to set up billing to run this model. Go to https://replicate.com/account/billing#billing "
        "to set it up. If you have recently set up billing, please wait a few minutes before trying again.",
        "status": 402,
    },
    404: {"detail": "The requested resource could not be found.", "status": 404},
    422: {
        "title": "Invalid version or not permitted",
        "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)",
        "status": 422,
    },
    429: {"detail": "Request was throttled. Your rate limit resets in ~30s."},
}
_NO_TOKEN = {"title": "Unauthenticated", "detail": "You did not pass an authentication token", "status": 401}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, kind: str, body: dict[str, Any] | None = None) -> Response:
    if body is None:
        body = _ERRORS.get(status) or {
            "title": HTTPStatus(status).phrase,
            "detail": f"The sandbox answered {status} ({HTTPStatus(status).phrase}).",
            "status": status,
        }
    headers = {"ratelimit-remaining": _RATELIMIT.get(kind, "2999"), "ratelimit-reset": "1"}
    if status == 429:
        headers = {"ratelimit-remaining": "0", "ratelimit-reset": "30"}
    return json_response(body, status, headers, media_type="application/problem+json")


def _progress_line(done: int, total: int, elapsed_s: float) -> str:
    """One tqdm progress line, as the model's denoising loop prints it (and the official clients parse it)."""
    if done == 0:
        return f"  0%|          | 0/{total} [00:00<?, ?it/s]"
    tenths = done * 10 / total
    bar = ("█" * int(tenths) + ("▌" if tenths - int(tenths) >= 0.5 else "")).ljust(10)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 else 0.0
    return f"{done * 100 // total:3d}%|{bar}| {done}/{total} [{_clock(elapsed_s)}<{_clock(left)}, {rate:.2f}it/s]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def replicate_progress(job: Job, step: int) -> None:
    """The model's logs while it runs: the seed and prompt when it starts, then one progress line per step.

    Nothing is logged before it starts: a new prediction's `logs` are "". Inputs the schema does not have
    get a warning line each when it starts.
    """
    if step == 0:
        job.logs += [ignored_input_warning(name) for name in job.meta.get("ignored_inputs", ())]
        job.logs += [f"Using seed: {job.seed}", f"Prompt: {job.input['prompt']}", "txt2img mode"]
    elapsed = time.time() - (job.started_at or time.time())
    job.logs.append(_progress_line(step, job.steps, elapsed))


def replicate_finisher(job: Job) -> tuple[JobState, str | None, str | None]:
    """How a Replicate job that ran to the end finishes (faults `job_error` and `nsfw` applied here)."""
    inp = job.input
    steps = int(inp["num_inference_steps"])
    if job.fault == "job_error":
        return "failed", JOB_ERROR, None
    files: dict[str, ImageSpec] = {}
    for index in range(int(inp["num_outputs"])):
        # The nsfw fault flags the even-numbered images, so 1 image fails the job and 2+ lose some.
        if job.fault == "nsfw" and not inp["disable_safety_checker"] and index % 2 == 0:
            job.logs.append(f"NSFW content detected in image {index}")
            continue
        spec = ImageSpec(inp["prompt"], job.seed, int(inp["width"]), int(inp["height"]), steps, index, "png")
        files[f"out-{index}.png"] = spec
    if not files:
        return "failed", NSFW_ERROR, None
    job.meta["files"] = files
    return "succeeded", None, None


def _job_id(bits: int) -> str:
    """26 characters of Replicate's lowercase base32-like id alphabet."""
    return "".join(_ID_ALPHABET[(bits >> (5 * i)) & 31] for i in range(26))


def _parse_duration(text: str) -> float | None:
    """Seconds of a `Cancel-After` value: a Go-style duration ('30s', '1h30m45s') or a bare number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


class ReplicateApp:
    """Routes of the Replicate emulator, bound to one provider core and the URL it is served at."""

    def __init__(self, core: ProviderCore, base_url: str, signer: ReplicateSigner) -> None:
        self.core = core
        self.base_url = base_url
        self.signer = signer

    def asgi(self) -> Starlette:
        """The Starlette application."""
        return Starlette(
            routes=[
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.list, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
                Route("/v1/deployments/{owner}/{name}/predictions", self.create_on_deployment, methods=["POST"]),
                Route("/v1/deployments/{owner}/{name}", self.deployment, methods=["GET"]),
                Route("/v1/predictions/{id}", self.get, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
                Route("/v1/models/{owner}/{name}", self.model, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/versions", self.versions, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/versions/{version}", self.version, methods=["GET"]),
                Route("/v1/webhooks/default/secret", self.webhook_secret, methods=["GET"]),
                Route("/files/{id}/{name}", self.file, methods=["GET"]),
            ],
            exception_handlers=self.core.not_found_handlers(lambda status: _error(status, "other")),
        )

    # -- shared gates -------------------------------------------------------------------------

    def _gate(self, request: Request, kind: str) -> Response | None:
        """Count the request; answer injected errors and authentication failures."""

        def refuse(status: int) -> Response:
            no_token = status == 401 and not request.headers.get("authorization", "").partition(" ")[0]
            return _error(status, kind, _NO_TOKEN if no_token else None)

        return self.core.gate(request, kind, refuse, schemes=("bearer", "token"))

    def _ok(self, body: Any, kind: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        all_headers = {"ratelimit-remaining": _RATELIMIT.get(kind, "2999"), "ratelimit-reset": "1", **(headers or {})}
        return json_response(body, status, all_headers)

    # -- predictions ---------------------------------------------------------------------------

    def prediction(self, job: Job) -> dict[str, Any]:
        """The prediction JSON of `job` as Replicate returns it now."""
        removed = self._removed(job)
        files: dict[str, ImageSpec] = job.meta.get("files", {})
        urls = {
            "get": f"{self.base_url}/v1/predictions/{job.id}",
            "cancel": f"{self.base_url}/v1/predictions/{job.id}/cancel",
            "web": f"https://replicate.com/p/{job.id}",
        }
        body: dict[str, Any] = {
            "id": job.id,
            "model": MODEL,
            "version": VERSION,
            "input": job.meta["echo"],
            "logs": "" if removed or not job.logs else "\n".join(job.logs) + "\n",
            "output": None,
            "data_removed": removed,
            "error": job.error,
            "status": _STATUS.get(job.state, job.state),
            "source": "api",
            "created_at": _iso(job.created_at),
            "urls": urls,
        }
        for key in ("deployment", "webhook", "webhook_events_filter"):
            if key in job.meta:
                body[key] = job.meta[key]
        if job.state == "succeeded" and not removed:
            body["output"] = [f"{self.base_url}/files/{job.id}/{name}" for name in files]
        if job.started_at is not None:
            body["started_at"] = _iso(job.started_at)
        if job.completed_at is not None:
            body["completed_at"] = _iso(job.completed_at)
            if job.state != "aborted":  # an aborted prediction never ran: no metrics, not charged
                metrics = {"total_time": round(job.completed_at - job.created_at, 6)}
                predict_time = job.predict_time()
                if predict_time is not None:
                    metrics["predict_time"] = round(predict_time, 6)
                body["metrics"] = metrics
        if job.deadline is not None:
            body["deadline"] = _iso(job.deadline)
        return body

    def _removed(self, job: Job) -> bool:
        """Whether retention has passed: output, logs and files are gone (the prediction stays)."""
        return job.completed_at is not None and time.time() - job.completed_at >= self.core.behaviour.retention_s

    async def create(self, request: Request) -> Response:
        """POST /v1/predictions and POST /v1/models/{owner}/{name}/predictions."""
        return await self._create(request, None)

    async def create_on_deployment(self, request: Request) -> Response:
        """POST /v1/deployments/{owner}/{name}/predictions: the model route's body, on a configured deployment."""
        params = request.path_params
        return await self._create(request, f"{params['owner']}/{params['name']}")

    async def _create(self, request: Request, deployment: str | None) -> Response:
        denied = self._gate(request, "create")
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _error(
                400, "create", {"title": "Invalid JSON", "detail": "The request body is not valid JSON.", "status": 400}
            )
        if not isinstance(body, dict):
            return _error(
                400,
                "create",
                {"title": "Invalid JSON", "detail": "The request body must be a JSON object.", "status": 400},
            )
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        if deployment is not None:
            if self.core.behaviour.deployment(deployment) is None:
                return _error(404, "create")
        elif owner is not None:
            # Whether this model is "official" (served without a version) is not known; the sandbox serves
            # it on the model route too, and every other model is a 404 as on Replicate.
            if f"{owner}/{name}" != MODEL:
                return _error(404, "create")
        elif not self._known_version(body.get("version")):
            return _error(422, "create")
        problems = [
            {
                "type": "additional_property_not_allowed",
                "field": "(root)",
                "description": f"Additional property {key} is not allowed",
            }
            for key in body
            if key not in _TOP_LEVEL or (key == "version" and owner is not None)
        ]
        if "input" not in body:
            problems.append({"type": "required", "field": "(root)", "description": "input is required"})
        hooks, hook_problems = _webhook_fields(body)
        problems += hook_problems
        filled, input_problems, ignored = validate_input(body.get("input", {}))
        problems += input_problems if "input" in body else []
        if problems:
            detail = validation_detail(problems)
            body422 = {"detail": detail, "status": 422, "title": "Input validation failed", "invalid_fields": problems}
            return _error(422, "create", body422)
        deadline: float | None = None
        cancel_after = request.headers.get("cancel-after")
        behaviour = self.core.behaviour
        if cancel_after is not None:
            seconds = _parse_duration(cancel_after)
            if seconds is None:
                detail = (
                    f"Invalid Cancel-After header {cancel_after!r}: expected a duration such as 30s, 5m or 1h30m45s."
                )
                return _error(400, "create", {"title": "Invalid Cancel-After header", "detail": detail, "status": 400})
            # Replicate documents a 5 s minimum; shorter values are raised to it (configurable for tests).
            deadline = time.time() + max(seconds, behaviour.cancel_after_min_s)
        job = self._new_job(body["input"], filled, ignored, behaviour, deadline, hooks)
        if deployment is not None:
            job.meta["deployment"] = deployment
        if behaviour.create_latency_s:
            await asyncio.sleep(behaviour.create_latency_s)
        fault_response = await self._create_fault(request, job)
        if fault_response is not None:
            return fault_response
        headers = {"Location": f"{self.base_url}/v1/predictions/{job.id}"}
        wait = self._prefer_wait(request.headers.get("prefer"))
        if wait is not None:
            headers["Preference-Applied"] = request.headers["prefer"].strip()
            if not await wait_event(job.done, wait):
                # The wait ran out: answer "starting" (what both official clients treat as "poll from here").
                body = self.prediction(job)
                body.update(status="starting", output=None)
                return self._ok(body, "create", 201, headers)
        return self._ok(self.prediction(job), "create", 201, headers)

    @staticmethod
    def _known_version(version: Any) -> bool:
        return isinstance(version, str) and version in (VERSION, f"{MODEL}:{VERSION}", MODEL)

    @staticmethod
    def _prefer_wait(prefer: str | None) -> float | None:
        if prefer is None:
            return None
        match = _PREFER.match(prefer)
        if match is None:
            return None
        seconds = int(match.group(1)) if match.group(1) else MAX_WAIT_S
        return float(min(max(seconds, 1), MAX_WAIT_S))

    def _new_job(
        self,
        raw: dict[str, Any],
        filled: dict[str, Any],
        ignored: list[str],
        behaviour: Behaviour,
        deadline: float | None,
        hooks: dict[str, Any],
    ) -> Job:
        draws = self.core.draws
        seed = filled.get("seed")
        if seed is None:
            seed = draws.bits("seed", 32)
            filled["seed"] = seed
        job = Job(
            id=_job_id(draws.bits("id", 130)),
            input=filled,
            seed=int(seed),
            queue_s=behaviour.queue_s.sample(),
            inference_s=behaviour.inference_s.sample(),
            fault=draws.fault(behaviour.faults),
            steps=int(filled["num_inference_steps"]),
            deadline=deadline,
            deadline_while_running=True,
            expire_state="aborted",
            meta={"echo": raw, "ignored_inputs": ignored, **hooks},
        )
        self.core.engine.submit(job)
        targets = [(hooks["webhook"], hooks["webhook_events_filter"])] if "webhook" in hooks else []
        if "webhook_completed" in hooks:  # the older field: completion only
            targets.append((hooks["webhook_completed"], ["completed"]))
        for url, events in targets:
            self.core.webhooks.spawn(self._webhook_events(job, url, frozenset(events)))
        return job

    # -- webhooks ------------------------------------------------------------------------------

    async def _webhook_events(self, job: Job, url: str, events: frozenset[str]) -> None:
        """Deliver `job`'s events in `events` to `url` as they happen, until it ends.

        `start` when it starts; `logs` when its logs grow (at most every 0.5 s); at the end one delivery for
        `completed`, or for `output` when it has outputs. This model's outputs appear only at completion, so
        `output` and `completed` together send one delivery, not two: the sandbox's reading of an event
        filter whose events coincide (either reading gives a receiver the final prediction).
        """
        started = False
        logs_sent, logs_at = 0, -WEBHOOK_THROTTLE_S
        while self.core.engine.get(job.id) is job:
            changed = job.changed
            if not started and job.started_at is not None:
                started = True
                if "start" in events:
                    self._deliver(job, url)
            if job.terminal:
                has_output = job.state == "succeeded" and bool(job.meta.get("files"))
                if "completed" in events or ("output" in events and has_output):
                    self._deliver(job, url)
                return
            wait = 60.0
            if "logs" in events and len(job.logs) > logs_sent:
                since = time.monotonic() - logs_at
                if since >= WEBHOOK_THROTTLE_S:
                    logs_sent, logs_at = len(job.logs), time.monotonic()
                    self._deliver(job, url)
                else:
                    wait = WEBHOOK_THROTTLE_S - since
            await wait_event(changed, wait)

    def _deliver(self, job: Job, url: str) -> None:
        """Send the prediction as it is now to `url`, signed (unless the `webhook_lost` fault drops it)."""
        if job.fault == "webhook_lost":
            self.core.webhooks.lose()
            return
        body = dumps(self.prediction(job))
        message_id = webhook_id(self.core.draws.bits("webhook", 160))
        self.core.webhooks.send(url, body, lambda: self.signer.headers(message_id, body), self.core.behaviour)

    async def _create_fault(self, request: Request, job: Job) -> Response | None:
        if job.fault == "reset":
            return await reset_connection(request)
        if job.fault == "hang":
            return await hang(request, self.core.closing)
        if job.fault == "malformed_json":
            text = dumps(self.prediction(job))
            return Response(text[: len(text) // 2], status_code=201, media_type="application/json")
        if job.fault == "gateway_error":
            return gateway_error()
        return None

    async def get(self, request: Request) -> Response:
        """GET /v1/predictions/{id}."""
        denied = self._gate(request, "get")
        if denied is not None:
            return denied
        job = self.core.readable(self.core.engine.get(request.path_params["id"]), lambda status: _error(status, "get"))
        if isinstance(job, Response):
            return job
        return self._ok(self.prediction(job), "get")

    async def cancel(self, request: Request) -> Response:
        """POST /v1/predictions/{id}/cancel: 200 with the prediction, canceled unless it had already ended."""
        denied = self._gate(request, "cancel")
        if denied is not None:
            return denied
        job = self.core.engine.get(request.path_params["id"])
        if job is None:
            return _error(404, "cancel")
        self.core.engine.cancel(job)
        return self._ok(self.prediction(job), "cancel")

    async def list(self, request: Request) -> Response:
        """GET /v1/predictions: newest first, 100 per page, `cursor` is the opaque offset token."""
        denied = self._gate(request, "list")
        if denied is not None:
            return denied
        jobs = self.core.engine.newest_first()
        return self._page(request, "list", [self.prediction(job) for job in jobs])

    def _page(self, request: Request, kind: str, items: Sequence[dict[str, Any]]) -> Response:
        """One page of `items` (100 per page) with `next`/`previous` links; `cursor` is an opaque offset."""
        offset = 0
        cursor = request.query_params.get("cursor")
        if cursor:
            try:
                offset = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o="))
            except ValueError:
                return _error(
                    400, kind, {"title": "Invalid cursor", "detail": "The cursor is not valid.", "status": 400}
                )

        def link(at: int) -> str:
            token = base64.urlsafe_b64encode(f"o={at}".encode()).decode()
            return f"{self.base_url}{request.url.path}?cursor={token}"

        body = {
            "next": link(offset + PAGE_SIZE) if offset + PAGE_SIZE < len(items) else None,
            "previous": link(max(0, offset - PAGE_SIZE)) if offset > 0 else None,
            "results": list(items[offset : offset + PAGE_SIZE]),
        }
        return self._ok(body, kind)

    async def version(self, request: Request) -> Response:
        """GET /v1/models/{owner}/{name}/versions/{id}: the version with its OpenAPI schema."""
        denied = self._gate(request, "version")
        if denied is not None:
            return denied
        params = request.path_params
        if f"{params['owner']}/{params['name']}" != MODEL or params["version"] != VERSION:
            return _error(404, "version")
        return self._ok(_version(), "version")

    async def versions(self, request: Request) -> Response:
        """GET /v1/models/{owner}/{name}/versions: the model's versions, newest first, paginated."""
        denied = self._gate(request, "versions")
        if denied is not None:
            return denied
        if f"{request.path_params['owner']}/{request.path_params['name']}" != MODEL:
            return _error(404, "versions")
        return self._page(request, "versions", [_version()])

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{owner}/{name}: the model with its `latest_version`."""
        denied = self._gate(request, "model")
        if denied is not None:
            return denied
        if f"{request.path_params['owner']}/{request.path_params['name']}" != MODEL:
            return _error(404, "model")
        body = {**_MODEL_FACTS, "run_count": self.core.engine.counts()["created"], "latest_version": _version()}
        return self._ok(body, "model")

    async def deployment(self, request: Request) -> Response:
        """GET /v1/deployments/{owner}/{name}: a configured deployment with its current release."""
        denied = self._gate(request, "deployment")
        if denied is not None:
            return denied
        owner, name = request.path_params["owner"], request.path_params["name"]
        settings = self.core.behaviour.deployment(f"{owner}/{name}")
        if settings is None:
            return _error(404, "deployment")
        release = {
            "number": 1,
            "model": MODEL,
            "version": VERSION,
            "created_at": _VERSION_CREATED_AT,
            "created_by": {"type": "organization", "username": owner, "name": owner, "github_url": None},
            "configuration": settings,
        }
        return self._ok({"owner": owner, "name": name, "current_release": release}, "deployment")

    async def webhook_secret(self, request: Request) -> Response:
        """GET /v1/webhooks/default/secret: the `whsec_` key that signs this account's webhooks."""
        denied = self._gate(request, "webhook_secret")
        if denied is not None:
            return denied
        return self._ok({"key": self.signer.secret}, "webhook_secret")

    async def file(self, request: Request) -> Response:
        """GET /files/{id}/{name}: an output image (the `truncated_image` fault serves half of it).

        Real output files want the Authorization header; the sandbox serves them with or without it; past
        `retention_s` they are gone (404).
        """
        return await self.core.file(request, lambda status: _error(status, "file"), self._removed)


def _version() -> dict[str, Any]:
    return {"id": VERSION, "created_at": _VERSION_CREATED_AT, "cog_version": "0.9.4", "openapi_schema": OPENAPI_SCHEMA}


def _webhook_fields(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The webhook settings of a create body, and the problems with them (Replicate answers those with 422).

    A webhook must be an HTTPS URL; the sandbox also takes `http://` to a loopback host, so tests can
    receive deliveries without TLS (Replicate itself would refuse it).
    """
    hooks: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    for field in ("webhook", "webhook_completed"):
        url = body.get(field)
        if url is None:
            continue
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
        host = urlsplit(url).hostname if isinstance(url, str) else None
        if not host or not (scheme == "https" or (scheme == "http" and is_loopback_url(url))):
            problems.append({"type": "format", "field": field, "description": f"{field} must be a valid HTTPS URL"})
        else:
            hooks[field] = url
    events = body.get("webhook_events_filter")
    if events is not None:
        if not isinstance(events, list):
            problems.append(
                {
                    "type": "invalid_type",
                    "field": "webhook_events_filter",
                    "description": "Invalid type. Expected: array, given: " + type(events).__name__,
                }
            )
        else:
            allowed = ", ".join(f'"{e}"' for e in WEBHOOK_EVENTS)
            problems += [
                {
                    "type": "enum",
                    "field": f"webhook_events_filter.{i}",
                    "description": f"webhook_events_filter.{i} must be one of the following: {allowed}",
                }
                for i, event in enumerate(events)
                if event not in WEBHOOK_EVENTS
            ]
    if "webhook" in hooks:
        hooks["webhook_events_filter"] = (
            list(dict.fromkeys(events)) if isinstance(events, list) else list(DEFAULT_WEBHOOK_EVENTS)
        )
    return hooks, problems


class ReplicateEmulation:
    """The Replicate emulator in one sandbox: its state, its webhook signer and its one endpoint, `replicate`."""

    def __init__(self, seed: int) -> None:
        self.core = ProviderCore("replicate", seed, replicate_finisher, replicate_progress, REPLICATE_RULES)
        self.signer = ReplicateSigner(seed)

    def apps(self, urls: Mapping[str, str]) -> dict[str, Starlette]:
        """The app of the `replicate` endpoint, served at `urls["replicate"]`."""
        return {"replicate": ReplicateApp(self.core, urls["replicate"], self.signer).asgi()}
