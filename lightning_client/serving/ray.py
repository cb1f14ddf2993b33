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
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle

from lightning_client.assembly import build_served
from lightning_client.generator import Generator
from lightning_client.serving.ray_pool import LocalWorker, RayWorkerPool, WorkerSpec
from lightning_client.serving.ray_settings import AutoscalingSettings, RaySettings

if TYPE_CHECKING:
    from ray.serve.deployment import Application

    from lightning_client.sandbox_endpoints import SandboxEndpoints
    from lightning_client.serving.settings import ServerSettings

__all__ = [
    "APP_NAME",
    "AutoscalingSettings",
    "LightningIngress",
    "RayAppConfig",
    "RaySettings",
    "app",
    "build_app",
    "config_from_file",
    "make_config",
    "serve_on_ray",
    "served_generator",
    "worker_pool",
]

#: Name of the Serve application (its deployments are `LightningIngress` and `LocalWorker`).
APP_NAME = "lightning"


class RayAppConfig(BaseModel):
    """Everything the Ray application needs, passed to its deployments (picklable).

    `local` holds the `LocalGenerator` arguments every replica uses (batching comes from `ray`).
    `hosted` names hosted providers served after the pool (pointed at `sandbox` when given);
    with any of them, or a `ledger` path, the ingress serves a `Router` whose `max_wait_s`
    spills requests over when the pool's expected wait is above it. With `config_path` the
    ingress serves that file's router instead, the pool in place of its local generator.
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
    config_path: str | None = None

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
    from lightning_client.providers.local import LocalGenerator

    # Capabilities depend on the variant only; nothing is loaded here.
    capabilities = LocalGenerator(variant=config.local.get("variant", "unet")).capabilities
    return RayWorkerPool(
        handle,
        capabilities=capabilities,
        name=config.pool_name,
        model=str(config.local.get("lightning_repo", "ByteDance/SDXL-Lightning")),
        replicas=config.ray.autoscaling.min_replicas if config.ray.autoscaling else config.ray.replicas,
        max_batch_size=config.ray.max_batch_size,
    )


def served_generator(pool: RayWorkerPool, config: RayAppConfig) -> Generator:
    """The file's router around the pool; else the pool alone, or a `Router` over it then the hosted providers."""
    return build_served(
        config=config.config_path,
        sandbox=config.sandbox,
        local=pool,
        hosted=config.hosted,
        ledger=config.ledger,
        max_wait_s=config.max_wait_s,
    )


class LightningIngress:
    """The ingress replica: the FastAPI app of `lightning-client serve` over the worker pool."""

    def __init__(self, worker: DeploymentHandle[Any], config: RayAppConfig) -> None:
        self._config = config
        self._generator = served_generator(worker_pool(worker, config), config)

    def __serve_build_asgi_app__(self) -> Any:
        from lightning_client.serving.app import create_app
        from lightning_client.serving.playground import playground_router
        from lightning_client.serving.settings import ServerSettings

        # The server hands the pool at least as many requests at once as its replicas can hold.
        server: ServerSettings = self._config.server or ServerSettings()
        capacity = self._config.ray.most_replicas * self._config.ray.ongoing
        if server.max_concurrency < capacity:
            server = server.model_copy(update={"max_concurrency": capacity})
        return create_app(self._generator, settings=server, routers=[playground_router()])


def build_app(config: RayAppConfig) -> Application:
    """The Serve application: the ingress bound to the worker deployment."""
    worker = serve.deployment(name="LocalWorker", **config.ray.worker_options(config.device))(LocalWorker)
    server = config.server
    most = max(config.ray.most_replicas * config.ray.ongoing, 8 if server is None else server.max_concurrency)
    concurrency = most + (64 if server is None else server.max_queue) + 8
    ingress = serve.deployment(
        name="LightningIngress",
        num_replicas=1,  # one ledger file, one admission queue
        ray_actor_options={"num_cpus": config.ray.ingress_num_cpus},
        max_ongoing_requests=concurrency,
    )(serve.ingress()(LightningIngress))
    return ingress.bind(worker.bind(config.worker_spec().model_dump()), config)


def app(args: dict[str, str]) -> Application:
    """The application builder for `serve run lightning_client.serving.ray:app key=value ...` and `serve deploy`.

    Keys: `config` (a configuration file: its `[ray]` table, its local generator on the replicas,
    its router at the ingress), or `local_model` (a folder with `base/` and `lightning/`) with
    `hosted` (comma-separated provider names), `ledger` and `max_wait_s`; and `device`,
    `replicas`, `api_key` (comma-separated; default `LIGHTNING_CLIENT_API_KEYS`), `host` (the
    interface Serve's proxy listens on, as in its `http_options`; default 127.0.0.1) and
    `unauthenticated` (`true`: serve beyond loopback without keys, like `--allow-unauthenticated`).
    Without keys on a non-loopback host it refuses to build, as `lightning-client serve` refuses
    to start.
    """
    known = {
        "config",
        "local_model",
        "device",
        "replicas",
        "api_key",
        "ledger",
        "max_wait_s",
        "hosted",
        "host",
        "unauthenticated",
    }
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    from lightning_client.serving.settings import (
        API_KEYS_VARIABLE,
        ServerSettings,
        keys_from_env,
        refuse_keyless_exposure,
    )

    keys = [SecretStr(k) for k in args.get("api_key", "").split(",") if k] or keys_from_env()
    allowed = args.get("unauthenticated", "false").strip().lower()
    if allowed not in ("true", "false"):
        raise ValueError(f"unauthenticated={allowed!r} is invalid; allowed: true, false")
    refuse_keyless_exposure(
        args.get("host", "127.0.0.1"),
        keys=bool(keys),
        allowed=allowed == "true",
        keys_hint=f"api_key=KEY (or {API_KEYS_VARIABLE})",
        allow_hint="unauthenticated=true",
    )
    server = ServerSettings(api_keys=tuple(keys), allow_unauthenticated=allowed == "true")
    overrides: dict[str, Any] = {"replicas": int(args["replicas"])} if "replicas" in args else {}
    if "config" in args:
        if "local_model" in args or "hosted" in args:
            raise ValueError("config describes what to serve; do not combine it with local_model or hosted")
        return build_app(
            config_from_file(Path(args["config"]), server=server, overrides=overrides, device=args.get("device"))
        )
    return build_app(
        make_config(
            RaySettings.model_validate(overrides),
            local_model=Path(args["local_model"]) if "local_model" in args else None,
            device=args.get("device", "auto"),
            server=server,
            hosted=[h for h in args.get("hosted", "").split(",") if h],
            ledger=args.get("ledger"),
            max_wait_s=float(args["max_wait_s"]) if "max_wait_s" in args else None,
        )
    )


def make_config(
    settings: RaySettings,
    local_model: Path | None,
    *,
    device: str = "auto",
    server: ServerSettings | None = None,
    hosted: Sequence[str] = (),
    sandbox: SandboxEndpoints | None = None,
    ledger: str | None = None,
    max_wait_s: float | None = None,
) -> RayAppConfig:
    """A `RayAppConfig` from the command's options (`local_model`: a folder of weights, see `LocalGenerator.folder_options`)."""
    from lightning_client.providers.local import LocalGenerator

    local: dict[str, Any] = {"device": device}
    if local_model is not None:
        local.update(LocalGenerator.folder_options(local_model.resolve()))
    return RayAppConfig(
        ray=settings,
        local=local,
        server=server,
        hosted=tuple(hosted),
        sandbox=sandbox,
        ledger=ledger,
        max_wait_s=max_wait_s,
    )


def config_from_file(
    path: Path,
    *,
    server: ServerSettings | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
) -> RayAppConfig:
    """The Ray application of a configuration file: its `[ray]` table (with `overrides`), its one
    local generator entry on the replicas, and its router (the other generators, `[router]`,
    `[ledger]`) at the ingress. Raises `ConfigurationError` naming the key at fault."""
    from lightning_client.config import read_config, settings_path
    from lightning_client.errors import ConfigurationError
    from lightning_client.providers.local import LocalGenerator
    from lightning_client.registry import generator_class

    file = read_config(path)
    local = [g for g in file.generators if issubclass(generator_class(g.kind), LocalGenerator)]
    if len(local) != 1:
        raise ConfigurationError(
            f"{path}: the Ray application runs one local generator on its replicas; the file has {len(local)}",
            path="generators",
        )
    entry = local[0]
    table = file.section("ray", RaySettings).model_dump(exclude_unset=True)
    try:
        settings = RaySettings.model_validate({**table, **(overrides or {})})
    except ValueError as exc:
        raise ConfigurationError(f"{path}: [ray]: {exc}", path="ray") from None
    options = {**entry.options, **{key: os.environ[name] for key, name in entry.env.items() if name in os.environ}}
    if device is not None:
        options["device"] = device
    ledger = settings_path(file.ledger.path)
    return RayAppConfig(
        ray=settings,
        local=options,
        server=server,
        pool_name=entry.name,
        config_path=str(path.resolve()),
        ledger=str(ledger.resolve()) if isinstance(ledger, Path) else ledger,
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
        needed = config.ray.most_replicas * config.ray.num_cpus + config.ray.ingress_num_cpus
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
