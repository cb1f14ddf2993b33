"""The playground: a page at `/` whose image follows typing, over the WebSocket `/v1/realtime`.

The page is plain HTML and one JavaScript module shipped as package data (no build step, nothing
loaded from elsewhere). The socket speaks JSON:

- server, on connect: `{"type": "hello", "providers": ["auto", ...], "steps": [1, 2, 4, 8]}`;
- client: `{"type": "send", "prompt", "steps", "seed" (null: random), "provider" ("auto" or a name),
  "width", "height"}` (size optional, 512 x 512 by default);
- server, per result: `{"type": "frame", "send_id", "prompt", "provider", "transport", "emulated", "seed",
  "steps", "latency_ms", "inference_ms", "cost_usd", "cost_estimated", "request_id", "image" (a data
  URL), "stats", "ledger"}`; per failure `{"type": "error", "send_id", "error", "message", ...}`.

Each socket has one realtime session on the served generator (a router's session for "auto", or
the named generator's), replaced when the provider changes. With API keys, the socket wants
`Authorization: Bearer <key>` or `?api_key=<key>` (browsers cannot set headers on a WebSocket).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
from importlib import resources
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.responses import HTMLResponse, Response

from lightning_client.credentials import get_logger
from lightning_client.errors import InvalidRequestError, LightningError
from lightning_client.generator import Generator
from lightning_client.ledger import Ledger
from lightning_client.realtime import RealtimeResult, RealtimeSession
from lightning_client.request import GenerationRequest
from lightning_client.serving.app import ServingState

__all__ = ["playground_router"]

log = get_logger("lightning_client.serving.playground")

_STATIC = resources.files("lightning_client.serving") / "static"
#: Default frame size: small frames keep latency and socket traffic low while typing.
FRAME_SIDE = 512
THROTTLE_S = 0.1


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


def _providers(generator: Generator) -> list[str]:
    inner = getattr(generator, "generators", None)
    names = [g.name for g in inner] if isinstance(inner, list) else [generator.name]
    return ["auto", *names]


def _open_session(generator: Generator, provider: str, ledger: Ledger) -> RealtimeSession:
    """The served generator's session: its router's (all, or one named generator), or its own."""
    realtime = getattr(generator, "realtime", None)
    if not callable(realtime):
        raise InvalidRequestError(f"{generator.name} has no realtime sessions", field="provider")
    if hasattr(generator, "generators"):  # a Router records into its own ledger
        session: RealtimeSession = realtime(throttle_s=THROTTLE_S, providers=None if provider == "auto" else [provider])
        return session
    session = realtime(throttle_s=THROTTLE_S, ledger=ledger)
    return session


def _frame(result: RealtimeResult, session: RealtimeSession, ledger: Ledger) -> dict[str, Any]:
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
        **_panels(session, ledger),
    }


def _panels(session: RealtimeSession | None, ledger: Ledger) -> dict[str, Any]:
    return {
        "stats": {} if session is None else dict(session.stats().__dict__),
        "ledger": [row.model_dump(mode="json") for row in ledger.summary()],
    }


class _PlaygroundSocket:
    """One browser connection: its session, the task forwarding results, and the messages it sends."""

    def __init__(self, websocket: WebSocket, state: ServingState, ledger: Ledger) -> None:
        self.websocket = websocket
        self.generator = state.generator
        own = getattr(self.generator, "ledger", None)
        self.ledger: Ledger = own if isinstance(own, Ledger) else ledger
        self.providers = _providers(self.generator)
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
            | _panels(self.session, self.ledger)
        )

    async def run(self) -> None:
        await self.send_json({"type": "hello", "providers": self.providers, "steps": [1, 2, 4, 8]})
        try:
            while True:
                message = await self.websocket.receive_json()
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
                session = _open_session(self.generator, provider, self.ledger)
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
            await self.send_json(_frame(result, session, self.ledger))

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
        if not _authorized(state, websocket):
            await websocket.close(code=1008, reason="invalid or missing API key")
            return
        await websocket.accept()
        await _PlaygroundSocket(websocket, state, ledger).run()

    return router
