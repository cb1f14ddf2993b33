"""`lightning-client serve --ray`: the same server on Ray Serve, worker replicas holding the folder's model.

`lightning-client serve` hands its options here; the application itself is `lightning_client.serving.ray`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_client.assembly import MissingKeysError, hosted_providers
from lightning_client.cli._common import UsageError, folder_flags, start_sandbox
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.state import is_url

if TYPE_CHECKING:
    from lightning_client.serving.settings import ServerSettings

__all__ = ["serve_ray"]


def serve_ray(
    *,
    config: Path | None,
    sandbox: bool,
    sandbox_url: str | None,
    folder: Path | None,
    host: str,
    port: int,
    settings: ServerSettings,
    ledger: str | Path | None,
    address: str | None,
    replicas: int | None,
    device: str,
    max_wait_s: float | None,
) -> None:
    """Start (or join, with `address`) a Ray cluster, serve until SIGINT/SIGTERM, then stop what was started.

    With `config`: its `[ray]` table (`--replicas` and `--address` override it), its generator
    of weights on disk on the replicas and its router at the ingress. Otherwise the replicas serve
    the weights in `folder`, in front of the sandbox's providers or those with keys. Raises `UsageError`
    (or `ConfigurationError`) for options that cannot work together.
    """
    try:
        from pydantic import ValidationError

        from lightning_client.serving.ray import RaySettings, config_from_file, make_config, serve_on_ray
    except ImportError as exc:
        raise UsageError(f"--ray needs its extra ({exc.name} is missing): pip install 'lightning-client[ray]'") from exc
    if port == 0:
        raise UsageError("--ray needs an explicit --port (Ray Serve's proxy does not report a free port)")
    overrides: dict[str, Any] = {}
    if replicas is not None:
        overrides["replicas"] = replicas
    if address is not None:
        overrides["address"] = address
    if config is not None:
        if sandbox or sandbox_url or folder is not None:
            raise UsageError(
                f"--config describes what to serve; do not combine it with --sandbox or {folder_flags()[0]}"
            )
        app_config = config_from_file(
            config, server=settings, overrides=overrides, device=None if device == "auto" else device
        )
        if replicas is not None and app_config.ray.autoscaling is not None:
            app_config = app_config.model_copy(update={"ray": app_config.ray.model_copy(update={"autoscaling": None})})
        serve_on_ray(app_config, host=host, port=port, on_ready=_ready)
        return
    if folder is None:
        raise UsageError(
            f"--ray serves the folder's model on worker replicas: give {folder_flags()[0]} DIR (or --config)"
        )
    try:
        ray_settings = RaySettings.model_validate(overrides)
    except ValidationError as exc:
        raise UsageError(f"--ray settings: {_first_problem(exc)}") from exc
    with contextlib.ExitStack() as stack:
        started = start_sandbox(stack, sandbox, sandbox_url)
        endpoints = None if started is None else SandboxEndpoints(started.urls)  # what the ingress unpickles
        hosted: list[str] = []
        with contextlib.suppress(MissingKeysError):
            hosted = hosted_providers(endpoints is not None)
        app_config = make_config(
            ray_settings,
            folder,
            device=device,
            server=settings,
            hosted=hosted,
            sandbox=endpoints,
            ledger=None if ledger is None else str(ledger) if is_url(ledger) else str(Path(ledger).resolve()),
            max_wait_s=max_wait_s,
        )
        serve_on_ray(app_config, host=host, port=port, on_ready=_ready)


def _ready(url: str) -> None:
    print(f"lightning-client serving on {url} (Ray Serve)", flush=True)


def _first_problem(exc: Any) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "ray"
    return f"{where}: {error['msg']}"
