"""The server on Ray Serve: worker replicas (one warm `LocalGenerator` each) behind the same FastAPI app.

The application has two deployments:

- `LocalWorker` (see `ray_pool`): `replicas` (or `autoscaling` min/max/target) replicas, each with
  `ray_actor_options` `num_cpus`/`num_gpus`, taking `max_ongoing_requests` requests at once so
  its `LocalGenerator` fills batches of `max_batch_size`;
- `LightningIngress`: the app of `lightning-client serve` (`create_app`), whose router sees the
  worker pool as one generator (`RayWorkerPool`, through a Serve deployment handle) next to the
  hosted providers, so spill-over (`max_wait_s`) and failover work as on one box. The ledger is
  the ingress's (one SQLite file on the ingress node).

Start it with `lightning-client serve --ray`, with `serve run lightning_client.serving.ray:app
[config=FILE] [local_model=DIR] ...`, or from `serve deploy` YAML naming the same import path.
Needs the `ray` extra; `import lightning_client` never imports this module.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from lightning_client.generator import Generator
from lightning_client.serving.ray_pool import LocalWorker, RayWorkerPool, WorkerSpec

if TYPE_CHECKING:
    from ray.serve.deployment import Application

    from lightning_client.cli._common import SandboxEndpoints
    from lightning_client.serving.settings import ServerSettings

__all__ = [
    "AutoscalingSettings",
    "RayAppConfig",
    "RaySettings",
    "app",
    "build_app",
    "serve_on_ray",
]

#: Name of the Serve application (its deployments are `LightningIngress` and `LocalWorker`).
APP_NAME = "lightning"


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


class RayAppConfig(BaseModel):
    """Everything the Ray application needs, passed to its deployments (picklable).

    `local` holds the `LocalGenerator` arguments every replica uses (batching comes from `ray`).
    `hosted` names hosted providers served after the pool (pointed at `sandbox` when given);
    with any of them, or a `ledger` path, the ingress serves a `Router` whose `max_wait_s`
    spills requests over when the pool's expected wait is above it.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ray: RaySettings = Field(default_factory=RaySettings)
    local: dict[str, Any] = Field(default_factory=dict)
    warm_steps: int | None = 4
    server: Any = None  # ServerSettings (typed loosely: the serve extra is imported lazily)
    hosted: tuple[str, ...] = ()
    sandbox: Any = None  # SandboxEndpoints
    ledger: str | None = None
    max_wait_s: float | None = Field(default=None, gt=0)
    pool_name: str = "local"

    @property
    def device(self) -> str:
        return str(self.local.get("device", "auto"))

    def worker_spec(self) -> WorkerSpec:
        local = {**self.local, "max_batch_size": self.ray.max_batch_size}
        if self.ray.batch_wait_s is not None:
            local["batch_wait_s"] = self.ray.batch_wait_s
        return WorkerSpec(local=local, torch_threads=self.ray.threads(self.device), warm_steps=self.warm_steps)


def worker_pool(handle: DeploymentHandle[Any], config: RayAppConfig) -> RayWorkerPool:
    """The generator in front of the worker deployment behind `handle`."""
    spec = config.worker_spec()
    return RayWorkerPool(
        handle,
        capabilities=spec.generator().capabilities,
        name=config.pool_name,
        replicas=config.ray.autoscaling.min_replicas if config.ray.autoscaling else config.ray.replicas,
        max_batch_size=config.ray.max_batch_size,
    )


def served_generator(pool: RayWorkerPool, config: RayAppConfig) -> Generator:
    """The pool alone, or a `Router` over the pool then the hosted providers (with the ledger)."""
    if not config.hosted and config.ledger is None and config.max_wait_s is None:
        return pool
    from lightning_client.cli._common import build_generators
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

    hosted = build_generators(list(config.hosted), config.sandbox) if config.hosted else []
    ledger = Ledger(config.ledger) if config.ledger is not None else None
    return Router([pool, *hosted], ledger=ledger, max_wait_s=config.max_wait_s)


class LightningIngress:
    """The ingress replica: the FastAPI app of `lightning-client serve` over the worker pool."""

    def __init__(self, worker: DeploymentHandle[Any], config: RayAppConfig) -> None:
        self._config = config
        self._generator = served_generator(worker_pool(worker, config), config)

    def __serve_build_asgi_app__(self) -> Any:
        from lightning_client.serving.app import create_app

        return create_app(self._generator, settings=self._config.server)


def build_app(config: RayAppConfig) -> Application:
    """The Serve application: the ingress bound to the worker deployment."""
    worker = serve.deployment(name="LocalWorker", **config.ray.worker_options(config.device))(LocalWorker)
    server = config.server
    concurrency = 64 if server is None else server.max_concurrency + server.max_queue + 8
    ingress = serve.deployment(
        name="LightningIngress",
        num_replicas=1,  # one ledger file, one admission queue
        ray_actor_options={"num_cpus": config.ray.ingress_num_cpus},
        max_ongoing_requests=concurrency,
    )(serve.ingress()(LightningIngress))
    return ingress.bind(worker.bind(config.worker_spec().model_dump()), config)


def load_ray_table(path: Path) -> dict[str, Any]:
    """The `[ray]` table of a TOML configuration file (empty when absent)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    with path.open("rb") as handle:
        data = tomllib.load(handle)
    table = data.get("ray", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [ray] must be a table, not {type(table).__name__}")
    return table


def app(args: dict[str, str]) -> Application:
    """The application builder for `serve run lightning_client.serving.ray:app key=value ...` and `serve deploy`.

    Keys: `config` (a TOML file whose `[ray]` table gives the settings), `local_model` (a folder
    with `base/` and `lightning/`), `device`, `replicas`, `api_key` (comma-separated), `ledger`,
    `max_wait_s`, `hosted` (comma-separated provider names).
    """
    known = {"config", "local_model", "device", "replicas", "api_key", "ledger", "max_wait_s", "hosted"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    table = load_ray_table(Path(args["config"])) if "config" in args else {}
    table.pop("address", None)
    if "replicas" in args:
        table["replicas"] = int(args["replicas"])
    from lightning_client.serving.settings import ServerSettings, keys_from_env

    keys = [SecretStr(k) for k in args.get("api_key", "").split(",") if k] or keys_from_env()
    return build_app(
        make_config(
            RaySettings.model_validate(table),
            local_model=Path(args["local_model"]) if "local_model" in args else None,
            device=args.get("device", "auto"),
            server=ServerSettings(api_keys=tuple(keys)),
            hosted=[h for h in args.get("hosted", "").split(",") if h],
            ledger=args.get("ledger"),
            max_wait_s=float(args["max_wait_s"]) if "max_wait_s" in args else None,
        )
    )


def make_config(
    settings: RaySettings,
    *,
    local_model: Path | None,
    device: str = "auto",
    server: ServerSettings | None = None,
    hosted: Sequence[str] = (),
    sandbox: SandboxEndpoints | None = None,
    ledger: str | None = None,
    max_wait_s: float | None = None,
) -> RayAppConfig:
    """A `RayAppConfig` from the command's options (the local model folder holds `base/` and `lightning/`)."""
    local: dict[str, Any] = {"device": device}
    if local_model is not None:
        folder = local_model.resolve()
        local.update(base_model=str(folder / "base"), lightning_repo=str(folder / "lightning"))
    return RayAppConfig(
        ray=settings,
        local=local,
        server=server,
        hosted=tuple(hosted),
        sandbox=sandbox,
        ledger=ledger,
        max_wait_s=max_wait_s,
    )


def serve_on_ray(
    config: RayAppConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the application until SIGINT/SIGTERM (or `stop`), then take it down.

    Joins `config.ray.address` when set (and on exit deletes only this application), otherwise
    starts a local Ray cluster sized for the replicas and shuts it down on exit.
    """
    import ray

    address = config.ray.address
    if address is None:
        replicas = config.ray.autoscaling.max_replicas if config.ray.autoscaling else config.ray.replicas
        needed = replicas * config.ray.num_cpus + config.ray.ingress_num_cpus
        ray.init(
            num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)),
            include_dashboard=False,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, log_to_driver=False)
    done = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        if on_ready is not None:
            on_ready(url)
        while not done.wait(0.5):
            pass
    finally:
        try:
            if address is None:
                serve.shutdown()  # type: ignore[no-untyped-call]
            else:
                serve.delete(APP_NAME)
        finally:
            ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
