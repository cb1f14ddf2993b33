"""The shared HTTP plumbing: error mapping, Retry-After parsing, polling, shielded cleanup, per-loop clients."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client._sync import run_sync
from lightning_client.providers._http import (
    HttpClients,
    PollDelays,
    error_from_response,
    make_timeout,
    parse_json,
    parse_retry_after,
    parse_timestamp,
    salvage_id,
    send,
    shielded,
    transport_error,
)
from lightning_client.providers.replicate import replicate_token
from tests.conftest import FileServer, Route


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers, request=httpx.Request("GET", "https://x.test/"))


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retryable"),
    [
        (
            401,
            {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"},
            {},
            lc.AuthenticationError,
            False,
        ),
        (402, {"title": "Billing required", "detail": "You need to set up billing"}, {}, lc.AuthenticationError, False),
        (403, {"detail": "User is locked"}, {}, lc.AuthenticationError, False),
        (429, {"detail": "Request was throttled. Your rate limit resets in ~30s."}, {}, lc.RateLimitError, True),
        (
            422,
            {"detail": "- input.width: Must be <= 1280", "invalid_fields": [{"field": "input.width"}]},
            {},
            lc.InvalidRequestError,
            False,
        ),
        (400, {"detail": "bad", "error_type": "bad_request"}, {}, lc.InvalidRequestError, False),
        (404, {"detail": "The requested resource could not be found."}, {}, lc.ProviderResponseError, False),
        (
            500,
            {"detail": "Internal server error", "error_type": "internal_error"},
            {},
            lc.ProviderUnavailableError,
            True,
        ),
        (502, b"<html>nginx</html>", {}, lc.ProviderUnavailableError, True),
        (
            503,
            {"detail": "Could not schedule a runner"},
            {"x-fal-retryable": "false"},
            lc.ProviderUnavailableError,
            False,
        ),
        (
            504,
            {"detail": "Request timed out", "error_type": "request_timeout"},
            {"x-fal-request-timeout-type": "user"},
            lc.GenerationTimeoutError,
            True,
        ),
        (504, {"detail": "Gateway timeout"}, {}, lc.ProviderUnavailableError, True),
        (
            499,
            {"detail": "Request cancelled by client", "error_type": "client_cancelled"},
            {},
            lc.ProviderUnavailableError,
            True,
        ),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]},
            {"x-fal-retryable": "false"},
            lc.ContentFilteredError,
            False,
        ),
    ],
)
def test_error_mapping(
    status: int, body: Any, headers: dict[str, str], cls: type[lc.LightningError], retryable: bool
) -> None:
    # The headers and error types in these cases are fal's; the mapping reads them through fal's hints.
    hints = lc.FalGenerator.error_hints
    err = error_from_response("p", response(status, body, headers), request_id="job-1", what="create", hints=hints)
    assert type(err) is cls
    assert (err.provider, err.status_code, err.request_id, err.retryable) == ("p", status, "job-1", retryable)
    assert err.message.startswith(f"create failed with HTTP {status}")
    assert not err.outcome_unknown


def test_a_provider_without_hints_is_judged_by_status_alone() -> None:
    # Another provider's headers and error types mean nothing to a provider that did not declare them.
    retry_flag = response(503, {"detail": "busy"}, {"x-fal-retryable": "false"})
    assert error_from_response("p", retry_flag).retryable
    deadline = response(
        504, {"detail": "timed out", "error_type": "request_timeout"}, {"x-fal-request-timeout-type": "user"}
    )
    assert type(error_from_response("p", deadline)) is lc.ProviderUnavailableError
    flagged = response(422, {"detail": [{"loc": ["body", "prompt"], "msg": "x", "type": "content_policy_violation"}]})
    assert type(error_from_response("p", flagged)) is lc.InvalidRequestError


def test_error_messages_quote_the_detail_and_name_the_field() -> None:
    fal = {"detail": [{"loc": ["body", "num_images"], "msg": "Input should be less than or equal to 8"}]}
    err = error_from_response("fal", response(422, fal))
    assert isinstance(err, lc.InvalidRequestError) and err.field == "num_images"
    assert "num_images: Input should be less than or equal to 8" in err.message
    long = error_from_response("p", response(500, {"detail": "x" * 1000}))
    assert len(long.message) < 400 and long.message.endswith("...")


def test_credentials_quoted_back_by_a_provider_are_masked() -> None:
    token = replicate_token("r8_quoted_back_secret_42")
    assert token is not None
    body = {"detail": f"Invalid token {token.get_secret_value()} for this account"}
    err = error_from_response("replicate", response(401, body))
    assert "r8_quoted_back_secret_42" not in str(err) and "Invalid token ********** for" in err.message


def test_retry_after_sources() -> None:
    assert parse_retry_after(response(429, headers={"Retry-After": "7"})) == 7.0
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert parse_retry_after(response(429, headers={"Retry-After": when})) == pytest.approx(20, abs=2)
    assert parse_retry_after(response(429, headers={"ratelimit-reset": "12"})) == 12.0
    assert parse_retry_after(response(429), "Your rate limit resets in ~30s.") == 30.0
    # Both hints: the longer wait wins; Retry-After wins over both.
    assert parse_retry_after(response(429, headers={"ratelimit-reset": "1"}), "resets in ~10s") == 10.0
    assert parse_retry_after(response(429, headers={"Retry-After": "3", "ratelimit-reset": "9"})) == 3.0
    assert parse_retry_after(response(429)) is None
    assert error_from_response("r", response(429, {"detail": "resets in ~30s"})).retry_after == 30.0


def test_transport_errors_flag_unknown_outcomes_only_for_creates_that_may_have_been_sent() -> None:
    request = httpx.Request("POST", "https://x.test/")
    sent = transport_error("p", httpx.ReadTimeout("timed out", request=request), what="create", creates=True)
    unsent = transport_error("p", httpx.ConnectError("refused", request=request), what="create", creates=True)
    read = transport_error("p", httpx.RemoteProtocolError("closed", request=request), what="get", request_id="j")
    assert isinstance(sent, lc.ProviderUnavailableError) and sent.outcome_unknown and sent.retryable
    assert "not re-sent" in sent.message
    assert not unsent.outcome_unknown and not read.outcome_unknown and read.request_id == "j"
    assert lc.LightningError("x").outcome_unknown is False
    assert sent.to_dict()["outcome_unknown"] is True


def test_parse_json_and_salvage_id() -> None:
    assert parse_json(response(200, {"a": 1}), provider="p", what="get") == {"a": 1}
    with pytest.raises(lc.ProviderResponseError, match="not valid JSON") as info:
        parse_json(response(201, b'{"id":"abc123","sta'), provider="p", what="create", outcome_unknown=True)
    assert (info.value.status_code, info.value.retryable, info.value.outcome_unknown) == (201, True, True)
    with pytest.raises(lc.ProviderResponseError, match="JSON list"):
        parse_json(response(200, [1]), provider="p", what="get")
    assert salvage_id(b'{"id":"abc123","sta', "id") == "abc123"
    assert salvage_id(b'{"status": "IN_QUEUE", "request_id": "0d5c-9f"', "request_id") == "0d5c-9f"
    assert salvage_id(b'{"id":"abc', "id") is None


def test_parse_timestamp_accepts_replicate_precisions() -> None:
    nanos = parse_timestamp("2023-08-16T18:57:08.36078514Z")
    assert nanos == datetime(2023, 8, 16, 18, 57, 8, 360785, tzinfo=timezone.utc)
    assert parse_timestamp("2024-10-04T18:15:05.494Z") == datetime(2024, 10, 4, 18, 15, 5, 494000, tzinfo=timezone.utc)
    assert parse_timestamp("2024-10-04T18:15:05+00:00") is not None
    assert parse_timestamp(None) is None and parse_timestamp("yesterday") is None


def test_poll_delays_back_off_and_respect_the_deadline() -> None:
    delays = PollDelays(first=0.05, cap=1.0)
    seen = [delays.next() for _ in range(10)]
    assert seen[0] == 0.05 and seen == sorted(seen) and seen[-1] == 1.0
    assert PollDelays(first=0.5).next(remaining=0.1) == 0.1
    assert PollDelays().next(remaining=-1) == 0.0


def test_make_timeout_is_explicit_everywhere() -> None:
    timeout = make_timeout(30.0)
    assert (timeout.read, timeout.connect, timeout.pool, timeout.write) == (30.0, 10.0, 10.0, 30.0)
    assert make_timeout(httpx.Timeout(1.0)) == httpx.Timeout(1.0)


async def test_shielded_work_finishes_when_the_caller_is_cancelled() -> None:
    finished: list[str] = []

    async def cleanup() -> str:
        await asyncio.sleep(0.1)
        finished.append("done")
        return "done"

    async def caller() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert await shielded(cleanup(), timeout=1, what="cleanup") == "done"
            raise

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["done"]


async def test_shielded_is_bounded_and_never_raises() -> None:
    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    async def broken() -> str:
        raise lc.ProviderUnavailableError("down")

    started = time.monotonic()
    assert await shielded(slow(), timeout=0.05, what="slow") is None
    assert time.monotonic() - started < 1
    assert await shielded(broken(), timeout=1, what="broken") is None


async def test_send_logs_and_maps(file_server: FileServer, caplog: pytest.LogCaptureFixture) -> None:
    file_server.routes["/ok"] = Route(body=b"{}", headers={"Content-Type": "application/json"})
    file_server.routes["/busy"] = Route(status=503, body=b'{"detail":"busy"}', headers={"Retry-After": "2"})
    caplog.set_level("DEBUG", logger="lightning_client.providers")
    clients = HttpClients(timeout=make_timeout(5), max_connections=4)
    client = clients.get()
    assert clients.get() is client
    ok = await send(client, "GET", f"{file_server.url}/ok", provider="p", what="probe", request_id="j1")
    assert ok.status_code == 200
    with pytest.raises(lc.ProviderUnavailableError) as info:
        await send(client, "GET", f"{file_server.url}/busy", provider="p", what="probe")
    assert (info.value.status_code, info.value.retry_after) == (503, 2.0)
    assert "GET " + file_server.url + "/ok -> 200" in caplog.text and "(id j1)" in caplog.text
    await clients.aclose()
    assert client.is_closed


def test_one_client_per_loop_closed_from_sync_code(file_server: FileServer) -> None:
    clients = HttpClients(timeout=make_timeout(5), max_connections=4)

    async def grab() -> httpx.AsyncClient:
        return clients.get()

    portal = run_sync(grab())
    assert run_sync(grab()) is portal  # the background loop keeps its client between calls
    own = asyncio.run(grab())
    assert own is not portal
    clients.close_all()
    assert portal.is_closed


async def test_large_pools_are_sharded_and_each_generation_leases_the_idlest_client() -> None:
    from lightning_client.providers._http import SHARD_CONNECTIONS, HttpClients, make_timeout

    big = HttpClients(timeout=make_timeout(5.0), max_connections=SHARD_CONNECTIONS * 4)
    with big.lease() as first:
        pass
    with big.lease() as again:
        assert again is first  # one generation at a time: always the same client, so one warm connection
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(big.lease()) for _ in range(8)]
        assert clients[:4] == [first, *clients[1:4]] and len(set(map(id, clients[:4]))) == 4
        assert clients[:4] == clients[4:]  # concurrent generations spread evenly
        with big.lease() as fifth:
            assert fifth is first
    assert big.get() is first  # a lone request takes the idlest client without counting
    small = HttpClients(timeout=make_timeout(5.0), max_connections=3)
    assert small.get() is small.get()
    await big.aclose()
    await small.aclose()
    assert all(c.is_closed for c in clients)
