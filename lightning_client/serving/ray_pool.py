"""The Ray Serve worker pool: `LocalWorker` replicas, each holding one warm `LocalGenerator`, and
`RayWorkerPool`, the generator a router sees in front of all of them.

Requests reach the replicas through a Serve deployment handle, so Serve does the placement,
the load balancing (the less loaded of two replicas), health checks and restarts. Each replica
takes up to `max_ongoing_requests` requests at once, enough to fill a batch, and its
`LocalGenerator` batches them. Imports Ray: only `lightning_client.serving.ray` imports this.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from lightning_client._log import get_logger
from lightning_client.assembly import local_generator
from lightning_client.errors import LightningError, ProviderUnavailableError, RateLimitError
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.providers.local import LocalGenerator
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult

__all__ = ["LocalWorker", "RayWorkerPool", "ReplicaState", "WorkerSpec"]

logger = get_logger("lightning_client.serving.ray")

#: Weight of the newest pipeline call in a replica's moving average of job time.
_EWMA = 0.3


class WorkerSpec(BaseModel):
    """What each replica builds: the `LocalGenerator` keyword arguments, its torch threads, the warm-up.

    `local` holds `LocalGenerator(**local)` arguments (`base_model`, `lightning_repo`, `device`,
    `max_batch_size`, ...). `torch_threads` (None: torch's default) bounds the intra-op threads of
    the replica's process, so replicas sharing a CPU machine do not oversubscribe its cores.
    `warm_steps` is loaded before the replica reports ready (None: load on first request).
    `factory` ("module:function", called with `local` as keyword arguments) builds the generator
    instead of `LocalGenerator(**local)`, e.g. around an in-memory pipeline.
    """

    model_config = ConfigDict(frozen=True)

    local: dict[str, Any] = Field(default_factory=dict)
    torch_threads: int | None = Field(default=None, ge=1)
    warm_steps: int | None = 4
    factory: str | None = None

    @property
    def max_batch_size(self) -> int:
        return int(self.local.get("max_batch_size", 1))

    def generator(self) -> LocalGenerator:
        """The replica's generator, not loaded yet (building it imports nothing heavy)."""
        return local_generator(factory=self.factory, **self.local)


class ReplicaState(BaseModel):
    """What a replica reports about its queue with every reply and when polled."""

    replica: str
    ongoing: int = 0
    job_s: float | None = None
    max_batch_size: int = 1
    reported_at: float = Field(default_factory=time.monotonic)


class LocalWorker:
    """A Serve replica: one warm `LocalGenerator`, fed concurrently so its dynamic batching applies."""

    async def __init__(self, spec: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        self._spec = WorkerSpec.model_validate(spec)
        if self._spec.torch_threads is not None:
            import torch

            torch.set_num_threads(self._spec.torch_threads)
        self._generator = self._spec.generator()
        if self._spec.warm_steps is not None:
            await self._generator.aload(self._spec.warm_steps)
        self._replica = serve.get_replica_context().replica_id.to_full_id_str()
        self._ongoing = 0
        self._job_s: float | None = None

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve one request; returns the result or the `LightningError`, and this replica's queue state."""
        self._ongoing += 1
        try:
            result = await self._generator.agenerate(GenerationRequest.model_validate(request))
        except LightningError as exc:
            exc.attempt = None  # the ingress records its own attempt
            return {"error": exc, "state": self.queue_state()}
        finally:
            self._ongoing -= 1
        took = (result.timings.inference_s or 0.0) + (result.timings.load_s or 0.0)
        self._job_s = took if self._job_s is None else (1 - _EWMA) * self._job_s + _EWMA * took
        return {"result": result, "state": self.queue_state()}

    def queue_state(self) -> dict[str, Any]:
        """Requests this replica holds now (queued or running) and its seconds per pipeline call."""
        return {
            "replica": self._replica,
            "ongoing": self._ongoing,
            "job_s": self._job_s,
            "max_batch_size": self._spec.max_batch_size,
        }

    async def __del__(self) -> None:
        await self._generator.aclose()


class RayWorkerPool(BaseGenerator):
    """A generator over the replicas of a `LocalWorker` deployment, reached through its Serve handle.

    Each result and attempt says which replica served it (`served_by`, the replica's Ray actor
    name, usable with `ray.get_actor(served_by, namespace="serve")`). A replica that dies or
    cannot be reached fails the attempt with a retryable `ProviderUnavailableError` (nothing is
    billed, so the router may send it again; Serve restarts the replica). A request that waits
    for a replica to start (cold start, scale-up) simply waits, within its `timeout_s`.

    `expected_wait_s()` comes from the replicas' queue depths (polled with a Serve broadcast at
    most every `poll_s` when a router asks, and reported with each reply): with Q requests held
    by R replicas of batch size B, a new request waits about floor(Q / (R x B)) pipeline calls
    of the slowest replica's observed duration.
    """

    def __init__(
        self,
        handle: DeploymentHandle[Any],
        *,
        capabilities: Capabilities,
        name: str = "local",
        model: str = "ByteDance/SDXL-Lightning",
        replicas: int = 1,
        max_batch_size: int = 1,
        poll_s: float = 0.5,
    ) -> None:
        self.name = name
        self.model = model
        self._handle = handle
        self._capabilities = capabilities
        self._replicas_hint = max(replicas, 1)
        self._batch = max(max_batch_size, 1)
        self._poll_s = poll_s
        self._states: dict[str, ReplicaState] = {}
        self._in_flight = 0
        self._refreshed = -poll_s

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def in_flight(self) -> int:
        """Requests this pool has sent and not yet had answered."""
        return self._in_flight

    @property
    def replicas(self) -> dict[str, ReplicaState]:
        """The last known state of each live replica, by replica id."""
        return dict(self._states)

    async def aload(self) -> float:
        """Wait until the handle reaches `replicas` warm replicas; returns the seconds waited (readiness).

        Until then Serve would route every request to the replicas it knows, however few.
        """
        started = time.monotonic()
        while True:
            self._refreshed = -self._poll_s
            await self.refresh_expected_wait()
            if len(self._states) >= self._replicas_hint:
                return time.monotonic() - started
            await asyncio.sleep(self._poll_s)

    def expected_wait_s(self) -> float | None:
        """Seconds a request sent now would wait for a replica's pipeline (None: not known yet)."""
        states = list(self._states.values())
        replicas = len(states) or self._replicas_hint
        capacity = replicas * self._batch
        queued = max(self._in_flight, sum(s.ongoing for s in states))
        if queued < capacity:
            return 0.0
        known = [s.job_s for s in states if s.job_s is not None]
        if not known:
            return None
        return max(known) * (queued // capacity)

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        self._in_flight += 1
        response = self._handle.options(method_name="generate").remote(ctx.request.model_dump(mode="json"))
        assert isinstance(response, DeploymentResponse)
        ctx.job_started(response.request_id)
        try:
            reply: dict[str, Any] = await response
        except asyncio.CancelledError:
            response.cancel()  # type: ignore[no-untyped-call]  # the replica's LocalGenerator stops after the current step
            raise
        except BackPressureError as exc:
            raise RateLimitError(
                f"the worker pool's queue is full: {exc}", provider=self.name, retry_after=self.expected_wait_s()
            ) from None
        except (RayError, RayServeException) as exc:
            # A replica that died or was unreachable mid-request: the generation is lost but was
            # never billed, so it is safe to send again (Serve replaces the replica).
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ProviderUnavailableError(
                f"worker replica unavailable ({type(exc).__name__}): {detail}".rstrip(": "),
                provider=self.name,
                retryable=True,
            ) from None
        finally:
            self._in_flight -= 1
        state = ReplicaState.model_validate(reply["state"])
        self._states[state.replica] = state
        ctx.attempt.served_by = state.replica
        error = reply.get("error")
        if error is not None:
            assert isinstance(error, LightningError)
            error.provider = self.name
            raise error
        served: GenerationResult = reply["result"]
        ctx.warnings = list(served.warnings)
        result = ctx.result(
            served.images, model=served.model, seed=served.seed, timings=served.timings, cost=served.cost
        )
        result.served_by = state.replica
        return result

    # -- replica queue depths --------------------------------------------------------------

    async def refresh_expected_wait(self) -> None:
        """Poll every replica's queue state (a Serve broadcast), at most once per `poll_s`."""
        now = time.monotonic()
        if now - self._refreshed < self._poll_s:
            return
        self._refreshed = now
        try:
            replies = await self._handle.broadcast("queue_state").results_async(
                timeout_s=self._poll_s * 4, return_exceptions=True
            )
        except (RayError, RayServeException, TimeoutError):  # no replica up yet: keep what is known
            return
        states = [ReplicaState.model_validate(r) for r in replies if isinstance(r, dict)]
        if states:
            self._states = {s.replica: s for s in states}
