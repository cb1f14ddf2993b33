"""The fal emulator: the queue API, the synchronous run endpoint and the pricing endpoint for
`fal-ai/fast-lightning-sdxl`, plus a file host on each of the queue and run origins.

Wire facts follow the project's fal reference. Choices where fal's behaviour is not documented:
- An invalid input is accepted by the queue and surfaces as a 422 `detail` list when the result is fetched
  (reported by integrators); the sync run endpoint answers the 422 directly.
- A result fetched before completion answers 202 with the status body (what other fal emulators do).
- A canceled request ends COMPLETED with `error_type: client_cancelled`; its result is a 499.
- Output files (fal's public CDN in production) are served on the origin the result came from: queue
  results and webhooks link to the queue origin, sync-run results to the run origin, since clients may
  trust only files on the origin they called (the Vercel AI SDK refuses other loopback or private hosts).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lightning_client.pricing import DEFAULT_PRICES
from lightning_client.testing._fal_schema import APP_ID, image_size, validate_input
from lightning_client.testing._jobs import Job, JobState, wait_event
from lightning_client.testing._provider import (
    HANG_LIMIT_S,
    ProviderCore,
    dumps,
    gateway_error,
    hang,
    json_response,
    reset_connection,
)
from lightning_client.testing._render import ImageSpec, content_type, render
from lightning_client.testing._webhooks import FalSigner

__all__ = ["FalApp", "fal_finisher"]

JOB_ERROR = "Sandbox fault 'job_error': the model raised an error while generating"
#: The Authorization schemes fal takes: keys ("Key <id:secret>") and `fal auth login` tokens ("Bearer <jwt>").
KEYS = ("key", "bearer")
KEEPALIVE_S = 15.0  # fal sends an SSE comment line this often on an idle status stream
_STATUS_ERRORS = {"runner_disconnected", "request_timeout", "client_cancelled"}  # shown on the COMPLETED status
_RESULT_STATUS = {
    "runner_server_error": 500,
    "runner_disconnected": 503,
    "request_timeout": 504,
    "client_cancelled": 499,
}
_FLAT_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("Bad request", "bad_request"),
    401: ("No user found for Key ID and Secret", None),
    403: ("User is locked", None),
    404: ("Not Found", None),
    429: ("Too Many Requests", None),
    499: ("Request cancelled by client", "client_cancelled"),
    500: ("Internal server error", "internal_error"),
    502: ("Runner returned an incomplete response", "runner_incomplete_response"),
    503: ("Could not schedule a runner for the request", "runner_scheduling_failure"),
    504: ("Request timed out", "request_timeout"),
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _flat_error(
    status: int,
    detail: str | None = None,
    error_type: str | None = None,
    request_id: str | None = None,
    user_timeout: bool = False,
) -> Response:
    """fal's flat error: `{"detail", "error_type"}` plus `X-Fal-Error-Type` (and the timeout type when the
    caller's `X-Fal-Request-Timeout` expired)."""
    known_detail, known_type = _FLAT_ERRORS.get(status, (_phrase(status), None))
    body: dict[str, Any] = {"detail": detail or known_detail}
    error_type = error_type or known_type
    headers: dict[str, str] = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    if user_timeout:
        headers["X-Fal-Request-Timeout-Type"] = "user"
    if request_id is not None:
        headers["x-fal-request-id"] = request_id
    return json_response(body, status, headers)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def fal_finisher(job: Job) -> tuple[JobState, str | None, str | None]:
    """How a fal job that ran to the end finishes (faults `job_error`, `completed_with_error`, `nsfw`)."""
    job.logs.append(f"Generated {job.input['num_images']} image(s) in {job.inference_s:.3f}s")
    if job.fault == "job_error":
        return "failed", JOB_ERROR, "runner_server_error"
    if job.fault == "completed_with_error":
        return "failed", "Runner disconnected", "runner_disconnected"
    inp = job.input
    width, height = image_size(inp)
    flagged = job.fault == "nsfw" and inp["enable_safety_checker"]
    steps = int(inp["num_inference_steps"])
    job.meta["files"] = {
        f"{i}.{inp['format']}": ImageSpec(
            inp["prompt"], job.seed, width, height, steps, i, inp["format"], blank=flagged
        )
        for i in range(int(inp["num_images"]))
    }
    job.meta["nsfw"] = flagged
    return "succeeded", None, None


class FalApp:
    """Routes of the fal emulator, bound to one provider core and the queue and run URLs."""

    def __init__(self, core: ProviderCore, queue_url: str, run_url: str, signer: FalSigner) -> None:
        self.core = core
        self.queue_url = queue_url
        self.run_url = run_url
        self.signer = signer

    def apps(self) -> tuple[Starlette, Starlette, Starlette]:
        """(queue app, sync-run app, REST app); files are served on both the queue and the run origin, each
        result linking to the origin it was asked on."""
        handlers = self.core.not_found_handlers(_flat_error)
        queue = Starlette(
            routes=[
                Route("/files/{id}/{name}", self.file, methods=["GET"]),
                Route("/{owner}/{app}/requests/{id}/status/stream", self.stream, methods=["GET"]),
                Route("/{owner}/{app}/requests/{id}/status", self.status, methods=["GET"]),
                Route("/{owner}/{app}/requests/{id}/cancel", self.cancel, methods=["PUT"]),
                Route("/{owner}/{app}/requests/{id}", self.result, methods=["GET"]),
                Route("/{owner}/{app}", self.submit, methods=["POST"]),
                Route("/{owner}/{app}/{path:path}", self.submit, methods=["POST"]),
            ],
            exception_handlers=handlers,
        )
        run = Starlette(
            routes=[
                Route("/files/{id}/{name}", self.file, methods=["GET"]),
                Route("/{owner}/{app}", self.run, methods=["POST"]),
                Route("/{owner}/{app}/{path:path}", self.run, methods=["POST"]),
            ],
            exception_handlers=handlers,
        )
        rest = Starlette(
            routes=[
                Route("/v1/models/pricing", self.pricing, methods=["GET"]),
                Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            ],
            exception_handlers=handlers,
        )
        return queue, run, rest

    # -- shared gates ---------------------------------------------------------------------------

    def _gate(self, request: Request, kind: str, request_id: str | None = None) -> Response | None:
        return self.core.gate(request, kind, lambda status: _flat_error(status, request_id=request_id), schemes=KEYS)

    def _readable(self, request: Request, request_id: str) -> Job | Response:
        """The job of a status read, or its 404 / `flaky_status` 503."""

        def refuse(status: int) -> Response:
            return _flat_error(status, "Request not found" if status == 404 else None, request_id=request_id)

        return self.core.readable(self._job(request), refuse)

    def _job(self, request: Request) -> Job | None:
        job = self.core.engine.get(request.path_params["id"])
        app = f"{request.path_params['owner']}/{request.path_params['app']}"
        return job if job is not None and job.meta["app"] == app else None

    # -- bodies ---------------------------------------------------------------------------------

    def _urls(self, job: Job) -> dict[str, Any]:
        base = f"{self.queue_url}/{job.meta['app']}/requests/{job.id}"
        return {
            "request_id": job.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def status_body(self, job: Job, with_logs: bool) -> dict[str, Any]:
        """The status object of `job`: IN_QUEUE, IN_PROGRESS or COMPLETED."""
        body = self._urls(job)
        if job.state == "queued":
            body.update(status="IN_QUEUE", queue_position=self.core.engine.queue_position(job))
            return body
        logs = (
            [
                {"message": m, "level": "INFO", "source": "USER", "timestamp": _iso(job.started_at or job.created_at)}
                for m in job.logs
            ]
            if with_logs
            else None
        )
        if job.state == "running":
            body.update(status="IN_PROGRESS", logs=logs)
            return body
        body.update(status="COMPLETED", logs=logs, metrics={})
        predict_time = job.predict_time()
        if predict_time is not None:
            body["metrics"] = {"inference_time": round(predict_time, 6)}
        if job.error_type in _STATUS_ERRORS:
            body.update(error=job.error, error_type=job.error_type)
        return body

    async def result_response(self, job: Job, files_url: str) -> Response:
        """What GET on the response URL (or the sync run) answers for a finished `job`, its files under
        `files_url` (the origin the caller asked)."""
        headers = {"x-fal-request-id": job.id}
        if job.meta.get("validation"):
            return json_response({"detail": job.meta["validation"]}, 422, headers)
        if job.state != "succeeded":
            status = _RESULT_STATUS.get(job.error_type or "", 500)
            timed_out = job.error_type == "request_timeout"
            return _flat_error(status, job.error, job.error_type, request_id=job.id, user_timeout=timed_out)
        inp = job.input
        files: dict[str, ImageSpec] = job.meta["files"]
        images = []
        for name, spec in files.items():
            if inp["sync_mode"]:
                data = await asyncio.to_thread(render, spec)
                url = f"data:{content_type(spec.format)};base64,{base64.b64encode(data).decode()}"
            else:
                url = f"{files_url}/files/{job.id}/{name}"
            images.append(
                {
                    "url": url,
                    "width": spec.width,
                    "height": spec.height,
                    "content_type": content_type(spec.format),
                    "file_name": name,
                }
            )
        body = {
            "images": images,
            "timings": {"inference": round(job.predict_time() or 0.0, 6)},
            "seed": job.seed,
            "has_nsfw_concepts": [bool(job.meta["nsfw"])] * len(images),
            "prompt": inp["prompt"],
        }
        headers["x-fal-billable-units"] = str(len(images))
        return json_response(body, 200, headers)

    # -- creating -------------------------------------------------------------------------------

    async def _create(self, request: Request, kind: str, webhook: str | None = None) -> Job | Response:
        """Checks shared by submit and run, then the new job (or the response that refuses it)."""
        denied = self._gate(request, kind)
        if denied is not None:
            return denied
        app = f"{request.path_params['owner']}/{request.path_params['app']}"
        if app != APP_ID or request.path_params.get("path"):
            return _flat_error(
                404,
                f"Application '{app}{'/' + request.path_params['path'] if request.path_params.get('path') else ''}' not found",
            )
        if webhook is not None:
            parts = urlsplit(webhook)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # fal's exact answer is not documented; a FastAPI-style 422 on the query parameter is what
                # its request validation gives for other fields.
                problems = [
                    {
                        "type": "url_parsing",
                        "loc": ["query", "fal_webhook"],
                        "msg": "Input should be a valid URL with an http or https scheme",
                        "input": webhook,
                    }
                ]
                return json_response({"detail": problems}, 422)
        deadline: float | None = None
        timeout = request.headers.get("x-fal-request-timeout")
        if timeout is not None:
            try:
                seconds = float(timeout)
            except ValueError:
                seconds = 0.0
            if seconds <= 0.1:
                return _flat_error(
                    400, f"Invalid X-Fal-Request-Timeout header {timeout!r}: expected seconds > 0.1", "bad_request"
                )
            deadline = time.time() + seconds
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError as exc:
            detail = [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            ]
            return json_response({"detail": detail}, 422)
        filled, errors = validate_input(payload)
        behaviour, draws = self.core.behaviour, self.core.draws
        seed = filled.get("seed")
        if seed is None:
            seed = draws.bits("seed", 32)
        request_id = str(uuid.UUID(int=draws.bits("id", 128), version=4))
        job = Job(
            id=request_id,
            input=filled,
            seed=int(seed),
            queue_s=behaviour.queue_s.sample(),
            inference_s=behaviour.inference_s.sample(),
            fault=None if errors else draws.fault(behaviour.faults),
            deadline=deadline,
            deadline_while_running=False,  # fal's timeout covers the time to start only
            expire_state="failed",
            expire_error="Request timed out",
            expire_error_type="request_timeout",
            meta={"app": app, "validation": errors},
        )
        job.logs.append(f"Generating with seed {seed}")
        if errors:
            return self.core.engine.reject(job, "Unprocessable Entity")
        self.core.engine.submit(job)
        if behaviour.create_latency_s:
            await asyncio.sleep(behaviour.create_latency_s)
        if job.fault == "reset":
            return await reset_connection(request)
        if job.fault == "hang":
            return await hang(request, self.core.closing)
        if job.fault == "gateway_error":
            return gateway_error()
        return job

    async def submit(self, request: Request) -> Response:
        """POST /{owner}/{app}: queue a request (`?fal_webhook=<url>` is told of its completion)."""
        webhook = request.query_params.get("fal_webhook")
        created = await self._create(request, "submit", webhook)
        if isinstance(created, Response):
            return created
        job = created
        if webhook is not None:
            job.meta["webhook"] = webhook
            self.core.webhooks.spawn(self._webhook_on_completion(job, webhook))
        body = {"status": "IN_QUEUE", **self._urls(job), "queue_position": self.core.engine.queue_position(job)}
        if job.fault == "malformed_json":
            text = dumps(body)
            return Response(text[: len(text) // 2], media_type="application/json", headers={"x-fal-request-id": job.id})
        return json_response(body, 200, {"x-fal-request-id": job.id})

    async def run(self, request: Request) -> Response:
        """POST on the run host: the request runs and the result comes in this response."""
        created = await self._create(request, "run")
        if isinstance(created, Response):
            return created
        job = created
        closing = self.core.closing or asyncio.Event()
        done = asyncio.ensure_future(job.done.wait())
        stop = asyncio.ensure_future(closing.wait())
        await asyncio.wait({done, stop}, timeout=HANG_LIMIT_S, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        stop.cancel()
        if not job.terminal:
            return await reset_connection(request)
        if job.fault == "malformed_json":
            return Response(
                b'{"images": [{"url": ', media_type="application/json", headers={"x-fal-request-id": job.id}
            )
        return await self.result_response(job, self.run_url)

    # -- reading --------------------------------------------------------------------------------

    @staticmethod
    def _with_logs(request: Request) -> bool:
        return request.query_params.get("logs", "0").lower() in ("1", "true")

    async def status(self, request: Request) -> Response:
        """GET .../requests/{id}/status: 202 while queued or in progress, 200 once COMPLETED."""
        request_id = request.path_params["id"]
        denied = self._gate(request, "status", request_id)
        if denied is not None:
            return denied
        job = self._readable(request, request_id)
        if isinstance(job, Response):
            return job
        body = self.status_body(job, self._with_logs(request))
        return json_response(body, 200 if job.terminal else 202, {"x-fal-request-id": job.id})

    async def stream(self, request: Request) -> Response:
        """GET .../status/stream: SSE status events on every change, closed right after COMPLETED."""
        request_id = request.path_params["id"]
        denied = self._gate(request, "stream", request_id)
        if denied is not None:
            return denied
        job = self._readable(request, request_id)
        if isinstance(job, Response):
            return job
        with_logs = self._with_logs(request)
        closing = self.core.closing or asyncio.Event()

        async def events() -> Any:
            while True:
                changed = job.changed  # taken before sending, so a change during the send is not missed
                body = self.status_body(job, with_logs)
                yield b"data: " + dumps(body) + b"\n\n"
                if job.terminal or closing.is_set():
                    return
                while not await wait_event(changed, KEEPALIVE_S):
                    if closing.is_set():
                        return
                    yield b": keep-alive\n\n"

        headers = {"x-fal-request-id": job.id, "Cache-Control": "no-cache"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def result(self, request: Request) -> Response:
        """GET .../requests/{id}: the model output once COMPLETED."""
        request_id = request.path_params["id"]
        denied = self._gate(request, "result", request_id)
        if denied is not None:
            return denied
        job = self._job(request)
        if job is None:
            return _flat_error(404, "Request not found", request_id=request_id)
        if not job.terminal:
            return json_response(self.status_body(job, False), 202, {"x-fal-request-id": job.id})
        return await self.result_response(job, self.queue_url)

    async def cancel(self, request: Request) -> Response:
        """PUT .../requests/{id}/cancel: 202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED or 404 NOT_FOUND."""
        request_id = request.path_params["id"]
        denied = self._gate(request, "cancel", request_id)
        if denied is not None:
            return denied
        job = self._job(request)
        if job is None:
            return json_response({"status": "NOT_FOUND"}, 404, {"x-fal-request-id": request_id})
        if not self.core.engine.cancel(job, "Request cancelled by client", "client_cancelled"):
            return json_response({"status": "ALREADY_COMPLETED"}, 400, {"x-fal-request-id": job.id})
        return json_response({"status": "CANCELLATION_REQUESTED"}, 202, {"x-fal-request-id": job.id})

    async def file(self, request: Request) -> Response:
        """GET /files/{id}/{name}: an output image (the `truncated_image` fault serves half of it)."""
        return await self.core.file(request, _flat_error)

    # -- webhooks -------------------------------------------------------------------------------

    async def _webhook_on_completion(self, job: Job, url: str) -> None:
        """Once `job` ends, POST `{request_id, gateway_request_id, status, payload | error}` to `url`, signed.

        The payload is what the result URL answers: the model output (`status: "OK"`), or for a failed request
        the error body, with `error: "Invalid status code: N"` (`status: "ERROR"`), as in fal's examples.
        """
        await job.done.wait()
        if self.core.engine.get(job.id) is not job:
            return  # forgotten by a reset
        if job.fault == "webhook_lost":
            self.core.webhooks.lose()
            return
        response = await self.result_response(job, self.queue_url)
        payload = json.loads(bytes(response.body))
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if response.status_code == 200:
            body.update(status="OK", payload=payload)
        else:
            body.update(status="ERROR", error=f"Invalid status code: {response.status_code}", payload=payload)
        data = dumps(body)
        self.core.webhooks.send(url, data, lambda: self.signer.headers(job.id, data), self.core.behaviour)

    async def jwks(self, request: Request) -> Response:
        """GET /.well-known/jwks.json: the public keys webhook signatures verify against (no token needed);
        `error_status` and `error_rate` apply, as to the other routes."""
        denied = self.core.gate(request, "jwks", _flat_error, schemes=())
        if denied is not None:
            return denied
        return json_response(await asyncio.to_thread(self.signer.jwks), 200)

    async def pricing(self, request: Request) -> Response:
        """GET /v1/models/pricing?endpoint_id=a,b: unit prices of the known endpoints."""
        denied = self._gate(request, "pricing")
        if denied is not None:
            return denied
        ids = [part for value in request.query_params.getlist("endpoint_id") for part in value.split(",") if part]
        prices = []
        for endpoint_id in ids:
            price = DEFAULT_PRICES.fal_unit(endpoint_id)
            if price is not None:
                prices.append(
                    {"endpoint_id": endpoint_id, "unit_price": price.usd, "unit": price.unit, "currency": "USD"}
                )
        return json_response({"prices": prices}, 200)
