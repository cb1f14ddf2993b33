"""`lightning-client serve --ray`: the same server on Ray Serve, worker replicas holding the local model."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lightning_client.cli._common import HOSTED, SandboxEndpoints, UsageError, has_key

if TYPE_CHECKING:
    from lightning_client.serving.settings import ServerSettings

__all__ = ["serve_ray"]


def serve_ray(
    *,
    config: Path | None,
    sandbox: bool,
    sandbox_url: str | None,
    local_model: Path | None,
    host: str,
    port: int,
    settings: ServerSettings,
    ledger: Path | None,
    address: str | None,
    replicas: int | None,
    device: str,
    max_wait_s: float | None,
) -> None:
    """Start (or join, with `address`) a Ray cluster, serve until SIGINT/SIGTERM, then stop what was started.

    `config`'s `[ray]` table gives the Ray settings; `--replicas` and `--address` override it.
    Raises `UsageError` for options that cannot work together.
    """
    try:
        from pydantic import ValidationError

        from lightning_client.serving.ray import RaySettings, load_ray_table, make_config, serve_on_ray
    except ImportError as exc:
        raise UsageError(f"--ray needs its extra ({exc.name} is missing): pip install 'lightning-client[ray]'") from exc
    if local_model is None and config is None:
        raise UsageError("--ray serves the local model on worker replicas: give --local-model DIR (or --config)")
    if port == 0:
        raise UsageError("--ray needs an explicit --port (Ray Serve's proxy does not report a free port)")
    table: dict[str, Any] = load_ray_table(config) if config is not None else {}
    if replicas is not None:
        table["replicas"] = replicas
        table.pop("autoscaling", None)
    if address is not None:
        table["address"] = address
    try:
        ray_settings = RaySettings.model_validate(table)
    except ValidationError as exc:
        raise UsageError(f"[ray] settings: {_first_problem(exc)}") from exc
    with contextlib.ExitStack() as stack:
        endpoints = None
        if sandbox_url is not None:
            try:
                endpoints = SandboxEndpoints.from_url(sandbox_url)
            except typer.BadParameter as exc:
                raise UsageError(str(exc)) from None
        elif sandbox:
            from lightning_client.testing.sandbox import Sandbox

            started = stack.enter_context(Sandbox())
            endpoints = SandboxEndpoints(
                started.replicate_url, started.fal_url, started.fal_run_url, started.fal_rest_url
            )
        hosted = list(HOSTED) if endpoints is not None else [p for p in HOSTED if has_key(p)]
        app_config = make_config(
            ray_settings,
            local_model=local_model,
            device=device,
            server=settings,
            hosted=hosted,
            sandbox=endpoints,
            ledger=None if ledger is None else str(ledger.resolve()),
            max_wait_s=max_wait_s,
        )

        def ready(url: str) -> None:
            print(f"lightning-client serving on {url} (Ray Serve)", flush=True)

        serve_on_ray(app_config, host=host, port=port, on_ready=ready)


def _first_problem(exc: Any) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "ray"
    return f"{where}: {error['msg']}"
