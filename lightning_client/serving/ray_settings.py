"""The `[ray]` table of the configuration: replicas or autoscaling, resources and batching per replica.

Plain pydantic (no Ray import), so a configuration file is validated on any machine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AutoscalingSettings", "RaySettings"]


class AutoscalingSettings(BaseModel):
    """Serve autoscaling of the worker replicas: between `min_replicas` and `max_replicas`, aiming at
    `target_ongoing_requests` per replica (default: the batch size, so replicas run full batches)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        return self


class RaySettings(BaseModel):
    """The `[ray]` table of the configuration file.

    Args:
        address: a cluster to join ("auto": the one on this machine); None starts a local one.
        replicas: fixed number of worker replicas (ignored when `autoscaling` is given).
        autoscaling: `{min_replicas, max_replicas, target_ongoing_requests}` instead of `replicas`.
        num_gpus: GPUs per replica (None: 1 when the device is CUDA, 0 otherwise).
        num_cpus: CPUs per replica (Ray's logical CPUs, for placement).
        max_batch_size, batch_wait_s: each replica's `LocalGenerator` dynamic batching.
        max_ongoing_requests: requests a replica holds at once (default: twice the batch size, so
            one batch fills while another runs); must be at least `max_batch_size`.
        max_queued_requests: requests waiting at the ingress for a replica (-1: no limit; past it
            the attempt fails with a retryable rate-limit error).
        torch_threads: torch intra-op threads per replica (default: `num_cpus` on CPU, torch's
            own choice on a GPU).
        ingress_num_cpus: CPUs reserved for the ingress replica.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = None
    replicas: int = Field(default=1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    num_gpus: float | None = Field(default=None, ge=0)
    num_cpus: float = Field(default=1.0, ge=0)
    max_batch_size: int = Field(default=4, ge=1)
    batch_wait_s: float | None = Field(default=None, ge=0)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int = Field(default=-1, ge=-1)
    torch_threads: int | None = Field(default=None, ge=1)
    ingress_num_cpus: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _enough_ongoing(self) -> RaySettings:
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} must be at least "
                f"max_batch_size={self.max_batch_size}, or batches can never fill"
            )
        return self

    @property
    def most_replicas(self) -> int:
        """The most worker replicas there can be (`replicas`, or the autoscaling maximum)."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas

    @property
    def ongoing(self) -> int:
        return self.max_ongoing_requests or 2 * self.max_batch_size

    def gpus(self, device: str) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if device.startswith("cuda") else 0.0

    def threads(self, device: str) -> int | None:
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, int(self.num_cpus)) if device == "cpu" else None

    def worker_options(self, device: str) -> dict[str, Any]:
        """`serve.deployment` options of the worker deployment."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.gpus(device)},
            "max_ongoing_requests": self.ongoing,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.autoscaling is None:
            options["num_replicas"] = self.replicas
        else:
            scaling = self.autoscaling
            options["autoscaling_config"] = {
                "min_replicas": scaling.min_replicas,
                "initial_replicas": max(scaling.min_replicas, 1),
                "max_replicas": scaling.max_replicas,
                "target_ongoing_requests": scaling.target_ongoing_requests or float(self.max_batch_size),
            }
        return options
