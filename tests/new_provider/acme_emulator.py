"""The sandbox's emulator of Acme's job API (see acme_provider.py), registered by conftest.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lightning_client.testing._jobs import Job, JobState
from lightning_client.testing._provider import ProviderCore, json_response
from lightning_client.testing._render import ImageSpec

#: The sandbox's job states in Acme's words.
_STATES = {
    "queued": "queued",
    "running": "running",
    "succeeded": "done",
    "failed": "error",
    "canceled": "cancelled",
    "aborted": "cancelled",
}


def _error(status: int) -> Response:
    """Acme's error answer for an HTTP status."""
    return json_response({"error": {"code": f"http_{status}", "message": f"HTTP {status}"}}, status)


def _finish(job: Job) -> tuple[JobState, str | None, str | None]:
    """How a job that ran to the end finishes (faults `job_error` and `nsfw`)."""
    if job.fault == "job_error":
        return "failed", "the worker crashed", "internal"
    if job.fault == "nsfw":
        return "failed", "the prompt was flagged", "nsfw"
    inp = job.input
    job.meta["files"] = {
        f"{i}.png": ImageSpec(inp["prompt"], job.seed, inp["width"], inp["height"], inp["steps"], i)
        for i in range(inp["count"])
    }
    return "succeeded", None, None


class AcmeEmulation:
    """One sandbox's Acme: its provider core and the app of its one endpoint."""

    def __init__(self, seed: int) -> None:
        self.core = ProviderCore("acme", seed, _finish)

    def _body(self, job: Job, url: str) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": job.id, "state": _STATES[job.state], "seed": job.seed}
        if job.state == "succeeded":
            body["outputs"] = [f"{url}/files/{job.id}/{name}" for name in job.meta["files"]]
            body["inference_s"] = job.predict_time()
        if job.error_type is not None:
            body["error"] = {"code": job.error_type, "message": job.error}
        if job.terminal:  # every image of a job that ran is billed, delivered or not
            body["billed_images"] = job.input["count"] if job.started_at is not None else 0
        return body

    def apps(self, urls: Mapping[str, str]) -> dict[str, Starlette]:
        url = urls["acme"]
        core = self.core

        async def create(request: Request) -> Response:
            refused = core.gate(request, "create", _error)
            if refused is not None:
                return refused
            payload = await request.json()
            behaviour, draws = core.behaviour, core.draws
            job = Job(
                id=f"acme-{draws.bits('id', 48):012x}",
                input=payload,
                seed=int(payload["seed"]),
                queue_s=behaviour.queue_s.sample(),
                inference_s=behaviour.inference_s.sample(),
                fault=draws.fault(behaviour.faults),
            )
            core.engine.submit(job)
            return json_response(self._body(job, url), 201)

        async def status(request: Request) -> Response:
            refused = core.gate(request, "status", _error, injected=False)
            if refused is not None:
                return refused
            job = core.readable(core.engine.get(request.path_params["id"]), _error)
            return job if isinstance(job, Response) else json_response(self._body(job, url))

        async def cancel(request: Request) -> Response:
            refused = core.gate(request, "cancel", _error, injected=False)
            if refused is not None:
                return refused
            job = core.engine.get(request.path_params["id"])
            if job is None:
                return _error(404)
            core.engine.cancel(job)
            return json_response(self._body(job, url))

        async def file(request: Request) -> Response:
            return await core.file(request, _error)

        routes = [
            Route("/v1/jobs", create, methods=["POST"]),
            Route("/v1/jobs/{id}", status, methods=["GET"]),
            Route("/v1/jobs/{id}/cancel", cancel, methods=["POST"]),
            Route("/files/{id}/{name}", file, methods=["GET"]),
        ]
        return {"acme": Starlette(routes=routes, exception_handlers=core.not_found_handlers(_error))}
