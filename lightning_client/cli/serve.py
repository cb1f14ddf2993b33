"""`lightning-client serve`: the OpenAI-compatible and native HTTP API over one generator or router."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr, ValidationError

from lightning_client.assembly import MissingKeysError, build_served, hosted_providers
from lightning_client.cli._common import (
    Debug,
    LedgerPath,
    ModelFolder,
    SandboxUrl,
    UsageError,
    fail,
    folder_flags,
    start_sandbox,
)

__all__ = ["serve"]

T = TypeVar("T")


def _pick(given: T | None, configured: T) -> T:
    return configured if given is None else given


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", exists=True, dir_okay=False, help="Configuration file: its router, and its [server] table."
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
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="Base URL clients reach the server at; `url` image links start with it."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host", help="Without keys: another Host name to answer (repeatable; '*' turns the check off)."
        ),
    ] = None,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option("--allowed-origin", help="A web origin whose pages may open the realtime socket (repeatable)."),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option("--max-body-bytes", min=1, help="Largest request body; larger ones get 413 (default 1 MiB)."),
    ] = None,
    max_file_bytes: Annotated[
        int | None,
        typer.Option("--max-file-bytes", min=1, help="Bytes of `url` images kept in memory (default 256 MiB)."),
    ] = None,
    allow_provider_option: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-provider-option",
            help="A PROVIDER.KEY callers may set in provider_options, e.g. PROVIDER.expand_prompt (repeatable).",
        ),
    ] = None,
    docs: Annotated[
        bool | None, typer.Option("--docs", help="Serve the browsable API docs at /docs (loads scripts from a CDN).")
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
        int | None, typer.Option("--replicas", min=1, help="With --ray: worker replicas (default: [ray] or 1).")
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
        from lightning_client.serving.runner import run_server
        from lightning_client.serving.settings import (
            ServerSettings,
            keys_from_env,
            refuse_keyless_exposure,
            server_section,
        )
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
    unauthenticated = allow_unauthenticated or section.allow_unauthenticated
    try:
        refuse_keyless_exposure(
            host,
            keys=bool(keys),
            allowed=unauthenticated,
            keys_hint=f"--api-key KEY (or {section.api_keys_env})",
            allow_hint="--allow-unauthenticated",
        )
    except ValueError as exc:
        fail(UsageError(str(exc)), debug=debug, code=2)
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
    try:
        settings = ServerSettings(
            api_keys=tuple(SecretStr(k) for k in keys),
            grace_s=grace_s,
            file_retention_s=_pick(file_retention_s, section.file_retention_s),
            max_files=section.max_files,
            max_file_bytes=_pick(max_file_bytes, section.max_file_bytes),
            max_body_bytes=_pick(max_body_bytes, section.max_body_bytes),
            allow_unauthenticated=unauthenticated,
            public_url=_pick(public_url, section.public_url),
            allowed_hosts=tuple(allowed_host or section.allowed_hosts),
            allowed_origins=tuple(allowed_origin or section.allowed_origins),
            allowed_provider_options=tuple(allow_provider_option or section.allowed_provider_options),
            docs=_pick(docs, section.docs),
            **admission,
        )
    except ValidationError as exc:
        fail(UsageError(_first_problem(exc)), debug=debug, code=2)
    if ray:
        from lightning_client.cli.serve_ray import serve_ray

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
        try:
            endpoints = start_sandbox(stack, sandbox, sandbox_url)
        except UsageError as exc:
            fail(exc, debug=debug, code=2)
        hosted: list[str] = []
        if config is None:
            with contextlib.suppress(MissingKeysError):  # then only the folder's provider, if any
                hosted = hosted_providers(endpoints is not None)
        try:
            generator = build_served(config=config, sandbox=endpoints, folder=folder, hosted=hosted, ledger=ledger)
        except (ValueError, UsageError) as exc:
            fail(exc, debug=debug, code=2)
        from lightning_client.serving.playground import playground_router

        app = create_app(generator, settings=settings, routers=[playground_router()])
        run_server(_with_telemetry(app, debug), host=host, port=port, grace_s=grace_s)


def _first_problem(exc: ValidationError) -> str:
    """A settings error as one line naming the option's setting."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "server"
    return f"{where}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}"


def _with_telemetry(app: Any, debug: bool) -> Any:
    """`app`, after setting up the OpenTelemetry SDK from the `OTEL_*` variables (flushed when the app stops)."""
    from lightning_client.serving.otel_sdk import configure_from_env, flush_at_shutdown

    try:
        shutdown = configure_from_env()
    except ValueError as exc:
        fail(UsageError(str(exc)), debug=debug, code=2)
    return app if shutdown is None else flush_at_shutdown(app, shutdown)
