"""`lightning-client sandbox`: run the Replicate and fal emulators standalone until Ctrl-C (the sandbox's own command)."""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["load_config", "sandbox"]


def _latency(value: Any) -> Any:
    """A config latency: a number, {"uniform": [lo, hi(, seed)]} or {"stragglers": {"base": s, "rate": r, ...}}.

    Anything else is passed on unchanged, for `configure` to reject with a message naming the setting.
    """
    from lightning_client.testing import Latency

    if isinstance(value, dict) and len(value) == 1:
        kind, args = next(iter(value.items()))
        if kind == "uniform" and isinstance(args, list):
            return Latency.uniform(*args)
        if kind == "stragglers" and isinstance(args, dict):
            return Latency.stragglers(**args)
    return value


def load_config(path: Path) -> dict[str, Any]:
    """Read a sandbox config file (JSON, or TOML when the name ends in .toml).

    Shape: {"seed": 0, "replicate": {<configure settings>}, "fal": {<configure settings>}}.
    """
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as exc:  # Python 3.10
            raise typer.BadParameter(
                f"{path}: TOML configs need Python 3.11 or later; use JSON", param_hint="--config"
            ) from exc
        data: Any = tomllib.loads(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected an object with keys seed, replicate, fal", param_hint="--config")
    unknown = set(data) - {"seed", "replicate", "fal"}
    if unknown:
        raise typer.BadParameter(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: seed, replicate, fal", param_hint="--config"
        )
    for provider in ("replicate", "fal"):
        settings = data.get(provider, {})
        for key in ("inference_s", "queue_s"):
            if key in settings:
                try:
                    settings[key] = _latency(settings[key])
                except (TypeError, ValueError) as exc:
                    raise typer.BadParameter(f"{path}: {provider}.{key}: {exc}", param_hint="--config") from exc
    return data


def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(help="Replicate port; the fal queue, run and REST endpoints use the next three. 0 = free ports."),
    ] = 0,
    config: Annotated[
        Path | None, typer.Option("--config", exists=True, dir_okay=False, help="JSON or TOML settings file.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for ids, drawn seeds and faults (overrides the config).")
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve HTTPS with a throwaway CA; the exports include SSL_CERT_FILE.")
    ] = False,
) -> None:
    """Run the Replicate and fal emulators and print how to point clients at them, until Ctrl-C."""
    from lightning_client.testing import Sandbox

    settings = load_config(config) if config is not None else {}
    sb = Sandbox(seed=seed if seed is not None else settings.get("seed", 0), host=host, port=port, tls=tls)
    try:
        sb.replicate.configure(**settings.get("replicate", {}))
        sb.fal.configure(**settings.get("fal", {}))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sb:
        typer.echo(
            f"Replicate API:  {sb.replicate_url}   (replicate.Client(base_url=...), ReplicateGenerator(base_url=...))"
        )
        typer.echo(f"fal queue:      {sb.fal_url}   (FalGenerator(base_url=...))")
        typer.echo(f"fal sync run:   {sb.fal_run_url}")
        typer.echo(f"fal REST:       {sb.fal_rest_url}")
        if tls:
            typer.echo(f"CA bundle:      {sb.ca_bundle}   (trusts the sandbox; removed when it stops)")
        typer.echo("Environment for lightning-client and the official replicate client (paste into a shell):")
        for name, value in sb.env().items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        typer.echo("fal_client: set fal_client.client.QUEUE_URL_FORMAT / RUN_URL_FORMAT (see docs/sandbox.md).")
        typer.echo("Serving until Ctrl-C.", err=True)
        while not stop.wait(0.5):
            pass
    typer.echo("Sandbox stopped.", err=True)
