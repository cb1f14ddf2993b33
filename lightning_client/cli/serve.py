"""`lightning-client serve`: the OpenAI-compatible and native HTTP API over one generator or router."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import SecretStr

from lightning_client.cli._common import (
    Debug,
    Endpoints,
    LedgerPath,
    MissingKeysError,
    ModelFolder,
    SandboxUrl,
    UsageError,
    fail,
    folder_flags,
    hosted_providers,
)

__all__ = ["serve"]

T = TypeVar("T")


def _pick(given: T | None, configured: T) -> T:
    return configured if given is None else given


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", exists=True, dir_okay=False, help="Configuration file: its router, and its \\[server] table."
        ),
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Start the provider sandbox in-process and serve a router over it.")
    ] = False,
    sandbox_url: SandboxUrl = None,
    folder: ModelFolder = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on; 0 picks a free one, printed at startup (default 8000).")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="Bearer key clients must send (repeatable); default: LIGHTNING_CLIENT_API_KEYS, comma-separated.",
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option("--allow-unauthenticated", help="Listen beyond loopback without any API key (not recommended)."),
    ] = False,
    max_queue: Annotated[
        int | None,
        typer.Option("--max-queue", min=0, help="Requests that may wait; past it 429 (default: from what is served)."),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            "--max-concurrency", min=1, help="Requests handed to the generator at once (default: from what is served)."
        ),
    ] = None,
    grace_s: Annotated[
        float | None,
        typer.Option("--grace-s", min=0.0, help="On SIGTERM, seconds in-flight requests may finish (default 30)."),
    ] = None,
    file_retention_s: Annotated[
        float | None,
        typer.Option("--file-retention-s", min=1.0, help="Seconds `url` images stay downloadable (default 3600)."),
    ] = None,
    ledger: LedgerPath = None,
    ray: Annotated[
        bool,
        typer.Option("--ray", help="Serve on Ray Serve: worker replicas each hold a model loaded from the folder."),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option("--address", help="With --ray: join this Ray cluster ('auto': the one on this machine)."),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="With --ray: worker replicas (default: \\[ray] or 1).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="With --ray: the replicas' torch device (auto, cpu, cuda, ...).")
    ] = "auto",
    max_wait_s: Annotated[
        float | None,
        typer.Option("--max-wait-s", min=0.0, help="With --ray: spill over to hosted providers past this wait."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Serve a generator or router over HTTP: OpenAI Images API, native API, status, metrics and a playground at /."""
    try:
        from lightning_client.serving.app import create_app
        from lightning_client.serving.build import build_served
        from lightning_client.serving.runner import is_loopback, run_server
        from lightning_client.serving.settings import ServerSettings, keys_from_env, server_section
    except ImportError as exc:
        fail(
            UsageError(f"serving needs its extra ({exc.name} is missing): pip install -e '.[serve]' in the checkout"),
            debug=debug,
            code=2,
        )
    try:
        section = server_section(config)  # the file's [server] table; options given here win
    except ValueError as exc:
        fail(exc, debug=debug, code=2)
    keys = list(api_key or []) or [k.get_secret_value() for k in keys_from_env(section.api_keys_env)]
    host = _pick(host, section.host)
    port = _pick(port, section.port)
    grace_s = _pick(grace_s, section.grace_s)
    if not keys and not is_loopback(host) and not (allow_unauthenticated or section.allow_unauthenticated):
        fail(
            UsageError(
                f"refusing to listen on {host} without an API key: give --api-key KEY (or {section.api_keys_env}), "
                "listen on 127.0.0.1, or pass --allow-unauthenticated"
            ),
            debug=debug,
            code=2,
        )
    if sandbox and sandbox_url:
        fail(
            UsageError("use either --sandbox (start one here) or --sandbox-url (use a running one), not both"),
            debug=debug,
            code=2,
        )
    if not ray and (address is not None or replicas is not None or device != "auto" or max_wait_s is not None):
        fail(UsageError("--address, --replicas, --device and --max-wait-s apply with --ray"), debug=debug, code=2)
    if config is not None and not ray and (sandbox or sandbox_url or folder is not None):
        fail(
            UsageError(f"--config describes what to serve; do not combine it with --sandbox or {folder_flags()[0]}"),
            debug=debug,
            code=2,
        )
    # Admission limits neither given here nor in [server] come from what is served (`serving.limits`).
    admission = {
        key: _pick(given, getattr(section, key))
        for key, given in (("max_queue", max_queue), ("max_concurrency", max_concurrency))
        if given is not None or key in section.model_fields_set
    }
    settings = ServerSettings(
        api_keys=tuple(SecretStr(k) for k in keys),
        grace_s=grace_s,
        file_retention_s=_pick(file_retention_s, section.file_retention_s),
        **admission,
    )
    if ray:
        from lightning_client.serving.ray_command import serve_ray

        try:
            serve_ray(
                config=config,
                sandbox=sandbox,
                sandbox_url=sandbox_url,
                folder=folder,
                host=host,
                port=port,
                settings=settings,
                ledger=ledger,
                address=address,
                replicas=replicas,
                device=device,
                max_wait_s=max_wait_s,
            )
        except (ValueError, UsageError) as exc:
            fail(exc, debug=debug, code=2)
        return
    with contextlib.ExitStack() as stack:
        endpoints: Endpoints | None = None
        if sandbox_url is not None:
            from lightning_client.testing.endpoints import SandboxAt

            try:
                endpoints = SandboxAt.from_url(sandbox_url)
            except ValueError as exc:
                fail(UsageError(str(exc)), debug=debug, code=2)
        elif sandbox:
            from lightning_client.testing.sandbox import Sandbox

            endpoints = stack.enter_context(Sandbox())
        hosted: list[str] = []
        if config is None:
            with contextlib.suppress(MissingKeysError):  # then only the folder's provider, if any
                hosted = hosted_providers(endpoints is not None, None)
        try:
            generator = build_served(config=config, sandbox=endpoints, folder=folder, hosted=hosted, ledger_path=ledger)
        except (ValueError, UsageError) as exc:
            fail(exc, debug=debug, code=2)
        from lightning_client.serving.playground import playground_router

        app = create_app(generator, settings=settings, routers=[playground_router()])
        run_server(app, host=host, port=port, grace_s=grace_s)
