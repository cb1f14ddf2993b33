"""An unknown outcome stays unknown across the wire: `RemoteGenerator` to the server to fal, and back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import lightning_client as lc
from lightning_client.errors import AllProvidersFailedError, GenerationTimeoutError
from lightning_client.providers.remote import server_deadline
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from lightning_client.testing._behaviour import GATEWAY_HTML


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def served(sb: Sandbox) -> Iterator[tuple[str, lc.Router]]:
    """A server with keys in front of a router over the sandbox's fal (its ledger in memory)."""
    router = lc.Router([lc.FalGenerator.for_sandbox(sb)], retries=2)
    with ServerThread(create_app(router, settings=ServerSettings(api_keys=("k",)))) as url:
        yield url, router


async def test_a_submit_reset_upstream_is_unknown_on_the_client_and_never_re_sent(
    sb: Sandbox, served: tuple[str, lc.Router]
) -> None:
    url, server_router = served
    sb.fal.configure(fault="reset")
    async with lc.Router([lc.RemoteGenerator(url, api_key="k")], retries=2) as client:
        with pytest.raises(AllProvidersFailedError) as info:
            await client.agenerate("a fox", width=256, height=256, seed=5, timeout_s=30)
    assert sb.fal.stats()["created"] <= 1
    sent = [a for a in info.value.attempts if a.outcome != "skipped"]
    assert len(sent) == 1
    attempt = sent[0]
    assert attempt.outcome == "unknown" and attempt.cost.usd is None
    assert attempt.retryable is False and "not re-sent" in (attempt.note or "")
    rows = [r for r in server_router.ledger.records() if r.provider == "fal"]
    assert [r.outcome for r in rows] == ["unknown"] and rows[0].cost.usd is None
    assert rows[0].client_request_id == attempt.request_id  # the two ledgers join


async def test_the_servers_deadline_ends_first_so_it_cancels_upstream_and_reports_it(
    sb: Sandbox, served: tuple[str, lc.Router]
) -> None:
    url, server_router = served
    sb.fal.configure(inference_s=60.0)  # the job runs past every deadline
    async with lc.RemoteGenerator(url, api_key="k") as remote:
        with pytest.raises(GenerationTimeoutError) as info:
            await remote.agenerate("a fox", width=256, height=256, timeout_s=4.0)
    error = info.value
    assert error.status_code == 504  # the server's answer, not this side hanging up
    assert error.attempt is not None and error.attempt.outcome == "failed"
    cost = error.attempt.cost  # the server's report of the job it cancelled
    assert cost.usd is not None and cost.usd > 0 and cost.basis.startswith("abandoned")
    assert sb.fal.stats()["canceled"] == 1
    rows = [r for r in server_router.ledger.records() if r.provider == "fal"]
    assert len(rows) == 1 and rows[0].outcome == "failed" and rows[0].cost.usd == cost.usd
    assert rows[0].client_request_id == error.attempt.request_id


def test_the_server_deadline_is_a_margin_shorter() -> None:
    assert server_deadline(10.0, 2.0) == 8.0
    assert server_deadline(2.0, 2.0) == 1.5  # at most a quarter of what is left
    assert server_deadline(0.0, 2.0) == 0.001


async def test_the_error_body_of_a_bare_generator_says_the_outcome_is_unknown(sb: Sandbox) -> None:
    sb.fal.configure(fault="reset")
    app = create_app(lc.FalGenerator.for_sandbox(sb), settings=ServerSettings(api_keys=("k",)))
    with ServerThread(app) as url:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{url}/v1/generations",
                json={"prompt": "a fox", "width": 256, "height": 256},
                headers={"Authorization": "Bearer k"},
                timeout=30,
            )
    error = response.json()["error"]
    assert response.status_code == 502
    assert (error["outcome_unknown"], error["retryable"], error["cost"]["usd"]) == (True, False, None)


async def test_a_proxys_502_in_front_of_the_server_is_an_unknown_outcome_never_re_sent() -> None:
    posts: list[int] = []

    async def generations(request: Request) -> Response:
        posts.append(1)
        return Response(GATEWAY_HTML, status_code=502, media_type="text/html")

    proxy = Starlette(routes=[Route("/v1/generations", generations, methods=["POST"])])
    with ServerThread(proxy) as url:
        async with lc.Router([lc.RemoteGenerator(url, api_key="k")], retries=2) as client:
            with pytest.raises(AllProvidersFailedError) as info:
                await client.agenerate("a fox", width=256, height=256, timeout_s=30)
    assert len(posts) == 1
    attempt = next(a for a in info.value.attempts if a.outcome != "skipped")
    assert attempt.outcome == "unknown" and attempt.cost.usd is None
