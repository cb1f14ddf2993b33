"""`lightning-client sandbox`: run the provider emulators standalone until Ctrl-C.

The emulated providers come from the emulator registry (`lightning_client.testing.emulators`),
their endpoints from the sandbox itself, so nothing here names a provider.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["load_config", "sandbox"]


def _emulated() -> list[str]:
    """The providers the sandbox emulates, in port order."""
    from lightning_client.testing.emulators import emulators

    return [e.name for e in emulators()]


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

    Shape: {"seed": 0, "<provider>": {<configure settings>}, ...}, one table per emulated provider.
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
    allowed = ["seed", *_emulated()]
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected an object with keys {', '.join(allowed)}", param_hint="--config")
    unknown = set(data) - set(allowed)
    if unknown:
        raise typer.BadParameter(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(allowed)}",
            param_hint="--config",
        )
    for provider in allowed[1:]:
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
        typer.Option(help="Port of the first endpoint; the others use the next ones, in turn. 0 = free ports."),
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
    """Run the provider emulators and print how to point clients at them, until Ctrl-C."""
    from lightning_client.testing import Sandbox

    settings = load_config(config) if config is not None else {}
    sb = Sandbox(seed=seed if seed is not None else settings.get("seed", 0), host=host, port=port, tls=tls)
    try:
        for provider in _emulated():
            sb.provider(provider).configure(**settings.get(provider, {}))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sb:
        width = max(map(len, sb.urls))
        for endpoint, url in sb.urls.items():
            typer.echo(f"{endpoint + ':':<{width + 2}}{url}")
        if tls:
            typer.echo(f"CA bundle:      {sb.ca_bundle}   (trusts the sandbox; removed when it stops)")
        typer.echo("Environment for lightning-client and the official clients that read it (paste into a shell):")
        for name, value in sb.env().items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        typer.echo("Official clients that read no environment: see docs/sandbox.md.")
        typer.echo("Serving until Ctrl-C.", err=True)
        while not stop.wait(0.5):
            pass
    typer.echo("Sandbox stopped.", err=True)
