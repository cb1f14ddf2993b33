"""The playground: a page at `/` whose image follows typing, over the WebSocket `/v1/realtime`.

The page is plain HTML and one JavaScript module shipped as package data (no build step, nothing
loaded from elsewhere). The socket speaks JSON:

- server, on connect: `{"type": "hello", "providers": ["auto", ...], "steps": [1, 2, 4, 8]}`;
- client: `{"type": "send", "prompt", "steps", "seed" (null: random), "provider" ("auto" or a name),
  "width", "height"}` (size optional, 512 x 512 by default);
- server, per result: `{"type": "frame", "send_id", "prompt", "provider", "transport", "emulated", "seed",
  "steps", "latency_ms", "inference_ms", "cost_usd", "cost_estimated", "request_id", "image" (a data
  URL), "stats", "ledger"}`; per failure `{"type": "error", "send_id", "error", "message", ...}`.
  "stats" and "ledger" are this socket's own: its session's counters, and a summary per provider of
  the attempts made for this socket (never other callers' or the operator's ledger).

Each socket has one realtime session on the served generator (a router's session for "auto", or
the named generator's), replaced when the provider changes. Every job passes the server's gate as an
HTTP request does: it holds an admission slot while it runs (a full queue fails that job with a
`RateLimitError` frame, nothing sent), and a router's budget is reserved before and charged after.
With API keys, the socket wants `Authorization: Bearer <key>` or `?api_key=<key>` (browsers cannot
set headers on a WebSocket).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
from collections import deque
from importlib import resources
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.responses import HTMLResponse, Response

from lightning_client._log import get_logger
from lightning_client.errors import InvalidRequestError, LightningError
from lightning_client.generator import AttemptEvent, observe_attempts
from lightning_client.ledger import Ledger, ProviderSummary, percentile
from lightning_client.realtime import RealtimeResult, RealtimeSession
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt
from lightning_client.serving.app import ServingState
from lightning_client.serving.sites import origin_allowed

__all__ = ["playground_router"]

log = get_logger("lightning_client.serving.playground")

_STATIC = resources.files("lightning_client.serving") / "static"
#: Default frame size: small frames keep latency and socket traffic low while typing.
FRAME_SIDE = 512
THROTTLE_S = 0.1
#: Latest successful latencies per provider kept for a socket's percentiles.
_LATENCIES = 1000


def _asset(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


def _authorized(state: ServingState, websocket: WebSocket) -> bool:
    keys = state.settings.api_keys
    if not keys:
        return True
    scheme, _, header_key = websocket.headers.get("authorization", "").partition(" ")
    given = (header_key.strip() if scheme.lower() == "bearer" else "") or websocket.query_params.get("api_key", "")
    matched = False
    for key in keys:  # every key compared, in constant time each
        matched |= hmac.compare_digest(given.encode(), key.get_secret_value().encode())
    return matched


class _Tally:
    """One provider's figures for a socket's summary, folded in as attempts end."""

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(("succeeded", "failed", "canceled", "unknown", "skipped"), 0)
        self.images = 0
        self.known_cost = 0.0
        self.unknown_costs = 0
        self.estimated = False
        self.read_retries = 0
        self.latencies: deque[float] = deque(maxlen=_LATENCIES)
        self.inference_s = 0.0
        self.inferences = 0

    def add(self, attempt: Attempt) -> None:
        self.outcomes[attempt.outcome or "unknown"] += 1
        if attempt.outcome == "skipped":
            return
        self.add_cost(attempt, 0.0, False)
        self.read_retries += attempt.read_retries
        self.estimated |= attempt.succeeded and not attempt.cost.basis
        if attempt.succeeded:
            self.images += attempt.num_images
            if attempt.timings.total_s is not None:
                self.latencies.append(attempt.timings.total_s)
            if attempt.timings.inference_s is not None:
                self.inference_s += attempt.timings.inference_s
                self.inferences += 1

    def add_cost(self, attempt: Attempt, known_before: float, unknown_before: bool) -> None:
        self.known_cost += attempt.cost.known_usd - known_before
        self.unknown_costs += int(attempt.cost.is_unknown) - int(unknown_before)
        self.estimated |= attempt.cost.estimated and attempt.cost.recorded

    def summary(self, provider: str) -> ProviderSummary:
        sent = sum(self.outcomes.values()) - self.outcomes["skipped"]
        decided = sent - self.outcomes["canceled"]
        ordered = sorted(self.latencies)
        total = None if self.unknown_costs else self.known_cost
        return ProviderSummary(
            provider=provider,
            count=sent,
            succeeded=self.outcomes["succeeded"],
            failed=self.outcomes["failed"],
            canceled=self.outcomes["canceled"],
            unknown=self.outcomes["unknown"],
            skipped=self.outcomes["skipped"],
            success_rate=self.outcomes["succeeded"] / decided if decided else None,
            p50_s=percentile(ordered, 50) if ordered else None,
            p95_s=percentile(ordered, 95) if ordered else None,
            p99_s=percentile(ordered, 99) if ordered else None,
            mean_inference_s=self.inference_s / self.inferences if self.inferences else None,
            images=self.images,
            cost_per_image=total / self.images if self.images and total is not None else None,
            total_cost=total,
            cost_estimated=self.estimated,
            known_cost=self.known_cost,
            unknown_costs=self.unknown_costs,
            read_retries=self.read_retries,
        )


class SocketSummary:
    """The summary a socket shows: its own attempts, aggregated as they end (an attempt observer).

    Nothing is read from the ledger: each ended attempt is folded in once (a later "update" adds
    only its change of cost), and the rows are rebuilt only after something changed.
    """

    def __init__(self) -> None:
        self._tallies: dict[str, _Tally] = {}
        self._costs: dict[str, tuple[float, bool]] = {}
        self._rows: list[dict[str, Any]] | None = []

    def observe(self, event: AttemptEvent, attempt: Attempt) -> None:
        if event not in ("end", "update"):
            return
        tally = self._tallies.setdefault(attempt.provider, _Tally())
        before = self._costs.get(attempt.attempt_id)
        if before is None:
            tally.add(attempt)
        else:
            tally.add_cost(attempt, *before)
        self._costs[attempt.attempt_id] = (attempt.cost.known_usd, attempt.cost.is_unknown)
        self._rows = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per provider (`Ledger.summary()`'s shape), in order of first appearance."""
        if self._rows is None:
            self._rows = [t.summary(p).model_dump(mode="json") for p, t in self._tallies.items()]
        return self._rows


def _frame(result: RealtimeResult, session: RealtimeSession, summary: SocketSummary) -> dict[str, Any]:
    image = result.images[0]
    inference = result.timings.inference_s
    return {
        "type": "frame",
        "send_id": result.send_id,
        "prompt": result.prompt,
        "provider": result.provider,
        "transport": result.transport,
        "emulated": result.emulated,
        "seed": result.seed,
        "steps": result.steps,
        "latency_ms": result.latency_s * 1e3,
        "inference_ms": None if inference is None else inference * 1e3,
        "cost_usd": result.cost.usd,
        "cost_estimated": result.cost.estimated,
        "request_id": result.request_id,
        "warnings": [str(w) for w in result.warnings],
        "image": f"data:{image.content_type};base64,{base64.b64encode(image.data).decode()}",
        **_panels(session, summary),
    }


def _panels(session: RealtimeSession | None, summary: SocketSummary) -> dict[str, Any]:
    return {
        "stats": {} if session is None else dict(session.stats().__dict__),
        "ledger": summary.rows(),
    }


async def _next_message(websocket: WebSocket) -> Any:
    """The next client message, decoded; a binary or non-JSON frame raises `InvalidRequestError`."""
    frame = await websocket.receive()
    if frame["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(frame.get("code", 1000), frame.get("reason"))
    text = frame.get("text")
    if text is None:
        raise InvalidRequestError("binary frames are not accepted: send JSON text, {'type': 'send', ...}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid JSON: {exc}; send {{'type': 'send', ...}}") from None


class _PlaygroundSocket:
    """One browser connection: its session, the task forwarding results, and the messages it sends."""

    def __init__(self, websocket: WebSocket, state: ServingState, ledger: Ledger) -> None:
        self.websocket = websocket
        self.state = state
        self.summary = SocketSummary()
        self.served = state.served
        own = self.served.ledger
        self.ledger: Ledger = ledger if own is None else own
        self.providers = ["auto", *(g.name for g in self.served.generators)]
        self.session: RealtimeSession | None = None
        self.choice: str | None = None
        self.forward: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    async def send_json(self, body: dict[str, Any]) -> None:
        async with self.lock:
            await self.websocket.send_json(body)

    async def error(self, exc: Exception, send_id: int | None = None) -> None:
        name = type(exc).__name__
        message = exc.message if isinstance(exc, LightningError) else str(exc)
        field = getattr(exc, "field", None)
        await self.send_json(
            {"type": "error", "send_id": send_id, "error": name, "message": message, "field": field}
            | _panels(self.session, self.summary)
        )

    async def run(self) -> None:
        await self.send_json({"type": "hello", "providers": self.providers, "steps": [1, 2, 4, 8]})
        try:
            while True:
                try:
                    message = await _next_message(self.websocket)
                except InvalidRequestError as exc:
                    await self.error(exc)
                    continue
                if not isinstance(message, dict) or message.get("type") != "send":
                    await self.error(InvalidRequestError("messages must be {'type': 'send', ...}", field="type"))
                    continue
                await self.on_send(message)
        except WebSocketDisconnect:
            pass
        finally:
            await self.close_session()

    async def on_send(self, message: dict[str, Any]) -> None:
        provider = message.get("provider") or "auto"
        try:
            if provider not in self.providers:
                raise InvalidRequestError(
                    f"provider={provider!r} is invalid; allowed: {', '.join(self.providers)}", field="provider"
                )
            request = GenerationRequest(
                prompt=message.get("prompt", ""),
                steps=message.get("steps", 2),
                seed=message.get("seed"),
                width=message.get("width", FRAME_SIDE),
                height=message.get("height", FRAME_SIDE),
                output_format="jpeg",
            )
            if self.session is None or provider != self.choice:
                await self.close_session()
                session = self.served.realtime(
                    None if provider == "auto" else provider, throttle_s=THROTTLE_S, ledger=self.ledger
                )
                session.gate = self.state.admitted
                # Observers set here reach every job of the session (its tasks start inside).
                with observe_attempts(self.summary.observe), observe_attempts(self.state.metrics.observe_attempt):
                    await session.start()
                self.session, self.choice = session, provider
                self.forward = asyncio.get_running_loop().create_task(self.results(session))
            await self.session.send(request)
        except LightningError as exc:
            await self.error(exc)

    async def results(self, session: RealtimeSession) -> None:
        while True:
            try:
                result = await session.__anext__()
            except StopAsyncIteration:
                return
            except LightningError as exc:
                await self.error(exc, getattr(exc, "send_id", None))
                continue
            await self.send_json(_frame(result, session, self.summary))

    async def shut_down(self) -> None:
        """The server is shutting down: cancel this socket's job and close it (1012: service restart)."""
        await self.close_session()
        with contextlib.suppress(Exception):
            await self.websocket.close(code=1012, reason="the server is shutting down")

    async def close_session(self) -> None:
        session, self.session, self.choice = self.session, None, None
        forward, self.forward = self.forward, None
        if session is not None:
            await session.aclose()
        if forward is not None:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forward


def playground_router() -> APIRouter:
    """The page at `/`, its script and icon, and the realtime socket `/v1/realtime`, to include in the app."""
    router = APIRouter()
    ledger = Ledger()  # for a served generator that keeps none of its own (a Router has one)

    @router.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_asset("playground.html"))

    @router.get("/playground.js", include_in_schema=False)
    async def script() -> Response:
        return Response(_asset("playground.js"), media_type="text/javascript")

    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response((_STATIC / "favicon.ico").read_bytes(), media_type="image/x-icon")

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        state: ServingState = websocket.app.state.lightning
        if not origin_allowed(websocket.headers, state.settings):  # another site's page: refused before any job
            await websocket.close(code=1008, reason="origin not allowed")
            return
        if not _authorized(state, websocket):
            await websocket.close(code=1008, reason="invalid or missing API key")
            return
        await websocket.accept()
        socket = _PlaygroundSocket(websocket, state, ledger)
        state.sockets.add(socket)
        try:
            await socket.run()
        finally:
            state.sockets.discard(socket)

    return router
