"""Replicate sends a create again after a 500 only when the prediction is provably absent from the list."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import lightning_client as lc
from lightning_client.serving.runner import ServerThread


class FailingApi:
    """A Replicate API whose creates all answer 500; its list shows `listed` (newest first)."""

    def __init__(self) -> None:
        self.creates = 0
        self.listed: list[dict[str, object]] = []
        self.more_pages = False

    def app(self) -> Starlette:
        async def create(request: Request) -> JSONResponse:
            self.creates += 1
            return JSONResponse({"detail": "Internal server error"}, status_code=500)

        async def listing(request: Request) -> JSONResponse:
            cursor = "http://127.0.0.1/v1/predictions?cursor=x" if self.more_pages else None
            return JSONResponse({"results": self.listed, "next": cursor, "previous": None})

        return Starlette(
            routes=[
                Route("/v1/predictions", listing, methods=["GET"]),
                Route("/v1/predictions", create, methods=["POST"]),
                Route("/v1/models/{owner}/{name}/predictions", create, methods=["POST"]),
            ]
        )


@pytest.fixture
def api() -> Iterator[tuple[FailingApi, str]]:
    fake = FailingApi()
    with ServerThread(fake.app()) as url:
        yield fake, url


def _request() -> lc.GenerationRequest:
    return lc.GenerationRequest(prompt="a harbour", width=512, height=512, seed=3)


async def test_a_500_with_no_prediction_listed_is_sent_again_then_fails_with_nothing_created(
    api: tuple[FailingApi, str],
) -> None:
    fake, url = api
    async with lc.ReplicateGenerator(api_key="r8_x", base_url=url) as gen:
        with pytest.raises(lc.ProviderUnavailableError) as info:
            await gen.agenerate(_request())
    assert fake.creates == 1 + gen.create_resend_limit
    err = info.value
    assert err.status_code == 500 and not err.outcome_unknown and "none was created" in err.message
    assert err.attempt is not None and err.attempt.outcome == "failed" and err.attempt.cost.usd == 0.0
    assert "sent again 2 time(s)" in (err.attempt.note or "")


async def test_a_list_that_does_not_reach_back_proves_nothing_so_the_create_is_not_sent_again(
    api: tuple[FailingApi, str],
) -> None:
    fake, url = api
    now = datetime.now(timezone.utc) + timedelta(minutes=5)  # a full page of newer predictions
    fake.listed = [{"id": f"p{i}", "created_at": now.isoformat(), "input": {"prompt": "other"}} for i in range(100)]
    fake.more_pages = True
    async with lc.ReplicateGenerator(api_key="r8_x", base_url=url) as gen:
        with pytest.raises(lc.ProviderUnavailableError) as info:
            await gen.agenerate(_request())
    assert fake.creates == 1
    err = info.value
    assert err.outcome_unknown and err.attempt is not None
    assert err.attempt.outcome == "unknown" and err.attempt.cost.usd is None
