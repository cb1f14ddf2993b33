"""`lightning-client mcp`: the router as MCP tools for agents, over stdio or streamable HTTP."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lightning_client.assembly import MissingKeysError, build_served, hosted_providers
from lightning_client.cli._common import (
    Debug,
    LedgerPath,
    SandboxUrl,
    UsageError,
    fail,
    missing_keys_message,
    start_sandbox,
)

__all__ = ["mcp"]


def mcp(
    config: Annotated[
        Path | None,
        typer.Option("--config", exists=True, dir_okay=False, help="Configuration file whose router the tools use."),
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Start the provider sandbox in-process and use a router over it.")
    ] = False,
    sandbox_url: SandboxUrl = None,
    ledger: LedgerPath = None,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")] = False,
    host: Annotated[str | None, typer.Option(help="With --http: interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="With --http: port; 0 picks a free one, printed at startup (default 8000).")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="With --http: bearer key clients must send (repeatable); default: LIGHTNING_CLIENT_API_KEYS.",
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option("--allow-unauthenticated", help="With --http: listen beyond loopback without any API key."),
    ] = False,
    debug: Debug = False,
) -> None:
    """Serve the router as MCP tools: generate_image, list_providers and spend (stdio, or HTTP with --http)."""
    try:
        from lightning_client.mcp_server import create_mcp_server, require_bearer
    except ImportError as exc:
        fail(
            UsageError(f"the MCP server needs its extra ({exc.name} is missing): pip install 'lightning-client[mcp]'"),
            debug=debug,
            code=2,
        )
    if sandbox and sandbox_url:
        fail(UsageError("use either --sandbox or --sandbox-url, not both"), debug=debug, code=2)
    if config is not None and (sandbox or sandbox_url):
        fail(UsageError("--config describes the router; do not combine it with --sandbox"), debug=debug, code=2)
    keys: list[str] = []
    host, port = host or "127.0.0.1", 8000 if port is None else port
    if not http and (api_key or allow_unauthenticated or (host, port) != ("127.0.0.1", 8000)):
        fail(UsageError("--host, --port, --api-key and --allow-unauthenticated apply with --http"), debug=debug, code=2)
    if http:
        from lightning_client.serving.settings import keys_from_env, refuse_keyless_exposure, server_section

        try:
            variable = server_section(config).api_keys_env  # as for serve: the file's [server] table names it
        except ValueError as exc:
            fail(exc, debug=debug, code=2)
        keys = list(api_key or []) or [k.get_secret_value() for k in keys_from_env(variable)]
        try:
            refuse_keyless_exposure(
                host,
                keys=bool(keys),
                allowed=allow_unauthenticated,
                keys_hint=f"--api-key KEY (or {variable})",
                allow_hint="--allow-unauthenticated",
            )
        except ValueError as exc:
            fail(UsageError(str(exc)), debug=debug, code=2)
    with contextlib.ExitStack() as stack:
        try:
            endpoints = start_sandbox(stack, sandbox, sandbox_url)
        except UsageError as exc:
            fail(exc, debug=debug, code=2)
        hosted: list[str] = []
        if config is None:
            try:
                hosted = hosted_providers(endpoints is not None)
            except MissingKeysError as exc:
                exc.args = (missing_keys_message(exc.providers, "mcp"),)
                fail(exc, debug=debug, code=2)
        try:
            generator = build_served(config=config, sandbox=endpoints, hosted=hosted, ledger=ledger)
        except (ValueError, UsageError) as exc:
            fail(exc, debug=debug, code=2)
        stack.callback(generator.close)
        server = create_mcp_server(generator)
        shutdown = _telemetry(debug, stdio=not http)
        if not http:
            if shutdown is not None:
                stack.callback(shutdown)
            server.run("stdio")
            return
        from lightning_client.serving.otel_sdk import flush_at_shutdown
        from lightning_client.serving.runner import run_server

        app: Any = server.streamable_http_app(host=host)
        if keys:
            app = require_bearer(app, keys)
        if shutdown is not None:
            app = flush_at_shutdown(app, shutdown)
        run_server(app, host=host, port=port, grace_s=5.0)


def _telemetry(debug: bool, *, stdio: bool) -> Any:
    """The OpenTelemetry SDK from the `OTEL_*` variables, if asked for (console output on stderr over stdio)."""
    from lightning_client.serving.otel_sdk import configure_from_env

    try:
        return configure_from_env(console=sys.stderr if stdio else None)
    except ValueError as exc:
        fail(UsageError(str(exc)), debug=debug, code=2)
