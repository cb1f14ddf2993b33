"""`lightning-client mcp --sandbox` driven by the official `mcp` client, over stdio and streamable HTTP."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, TextContent

from lightning_client.testing import Sandbox

TOOLS = {"generate_image", "list_providers", "spend"}


@contextlib.asynccontextmanager
async def stdio_session(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """A client session with `lightning-client mcp ARGS` (default `--sandbox`; entered and left in one task,
    as anyio needs)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lightning_client", "mcp", *(args or ["--sandbox"])],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        yield client


def _text(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_stdio_lists_the_tools_and_generates_a_png() -> None:
    async with stdio_session() as session:
        await _lists_and_generates(session)


async def _lists_and_generates(session: ClientSession) -> None:
    listed = await session.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    read_only = {t.name for t in listed.tools if t.annotations is not None and t.annotations.read_only_hint}
    assert read_only == {"list_providers", "spend"}
    result = await session.call_tool("generate_image", {"prompt": "a lighthouse", "size": "256x256", "seed": 11})
    assert isinstance(result, CallToolResult) and not result.is_error
    images = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
    summary = json.loads(_text(result))
    assert summary["seed"] == 11 and summary["provider"] in ("replicate", "fal")
    assert summary["latency_s"] > 0 and summary["cost_usd"] > 0

    spent = await session.call_tool("spend", {})
    assert isinstance(spent, CallToolResult) and not spent.is_error
    report: dict[str, Any] = spent.structured_content or json.loads(_text(spent))
    assert report["total_usd"] == pytest.approx(summary["cost_usd"])
    assert report["budget"]["left_usd"] is None  # no budget set
    providers = await session.call_tool("list_providers", {})
    assert isinstance(providers, CallToolResult) and not providers.is_error
    rows = (providers.structured_content or json.loads(_text(providers)))["providers"]
    assert {r["name"] for r in rows} == {"replicate", "fal"}
    assert all(r["health"]["circuit"] == "closed" and 4 in r["capabilities"]["steps"] for r in rows)


async def test_bad_input_is_a_tool_error_with_the_librarys_message() -> None:
    async with stdio_session() as session:
        await _refuses_bad_input(session)


async def _refuses_bad_input(session: ClientSession) -> None:
    result = await session.call_tool("generate_image", {"prompt": "x", "steps": 3})
    assert isinstance(result, CallToolResult) and result.is_error
    assert "steps=3 is invalid; allowed: 1, 2, 4 or 8" in _text(result)
    result = await session.call_tool("generate_image", {"prompt": "x", "provider": "nope"})
    assert isinstance(result, CallToolResult) and result.is_error and "providers" in _text(result)
    result = await session.call_tool("generate_image", {"prompt": "x", "size": "big"})
    assert isinstance(result, CallToolResult) and result.is_error and "size='big' is invalid" in _text(result)
    assert not (await session.call_tool("generate_image", {"prompt": "x", "size": "256x256"})).is_error


def _start_http(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`lightning-client mcp --sandbox --http --port 0 ARGS` and its base URL, once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_client", "mcp", "--sandbox", "--http", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"serving on (http://\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("`lightning-client mcp --http` did not start")


async def test_streamable_http_needs_the_key_and_serves_the_tools() -> None:
    process, url = _start_http("--api-key", "k")
    try:
        async with httpx2.AsyncClient() as anonymous:
            assert (await anonymous.post(f"{url}/mcp", json={})).status_code == 401
        async with (
            httpx2.AsyncClient(headers={"Authorization": "Bearer k"}, timeout=60) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            result = await client.call_tool("generate_image", {"prompt": "x", "aspect_ratio": "1:1", "steps": 2})
            assert isinstance(result, CallToolResult) and not result.is_error
            assert any(isinstance(c, ImageContent) for c in result.content)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


async def test_a_configured_router_brings_its_budget_and_ledger(lightning_sandbox: Sandbox, tmp_path: Path) -> None:
    lightning_sandbox.fal.reset()
    config = tmp_path / "app.toml"
    config.write_text(
        f"""
[[generators]]
kind = "fal"
base_url = "{lightning_sandbox.fal_url}"
api_key_env = "FAL_KEY"

[router]
budget_usd = 0.003

[ledger]
path = "{tmp_path / "ledger.sqlite"}"
"""
    )
    async with stdio_session("--config", str(config), env={"FAL_KEY": "fal-test"}) as session:
        first = await session.call_tool("generate_image", {"prompt": "x", "size": "256x256"})
        assert isinstance(first, CallToolResult) and not first.is_error
        second = await session.call_tool("generate_image", {"prompt": "x", "size": "256x256"})
        assert isinstance(second, CallToolResult) and second.is_error and "budget" in _text(second)
        spent = await session.call_tool("spend", {})
        assert isinstance(spent, CallToolResult)
        report: dict[str, Any] = spent.structured_content or json.loads(_text(spent))
    cost = json.loads(_text(first))["cost_usd"]
    assert report["budget"]["total_usd"] == 0.003
    assert report["budget"]["left_usd"] == pytest.approx(0.003 - cost)
    assert [row["provider"] for row in report["providers"]] == ["fal"]
    assert (tmp_path / "ledger.sqlite").exists()


def test_http_options_without_http_and_no_key_beyond_loopback_are_usage_errors() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_CLIENT_API_KEYS"}
        return subprocess.run(
            [sys.executable, "-m", "lightning_client", "mcp", "--sandbox", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    stray = run("--api-key", "k")
    assert stray.returncode == 2 and "apply with --http" in stray.stderr
    open_ = run("--http", "--host", "0.0.0.0", "--port", "0")
    assert open_.returncode == 2 and "--api-key" in open_.stderr and "--allow-unauthenticated" in open_.stderr
