"""The fal realtime emulator: `POST {rest}/tokens/` and the WebSocket at the run host's `/{owner}/{app}/realtime`.

Wire facts follow the project's reference (fal-client's `realtime()`): a short-lived token from the tokens
route (answered as a JSON string), the socket at `?fal_jwt_token=<token>[&max_buffering=N]`, model inputs
as binary msgpack frames, results as binary msgpack, JSON text frames for `x-fal-message` (timings, skipped
by clients) and `x-fal-error` (`TIMEOUT` when idle, then the socket closes).

Choices where fal's behaviour is not documented:
- A token is checked when the socket opens, not afterwards: a socket outlives its token (fal's JS client
  refreshes tokens "without dropping the socket"). An expired or unknown token is refused (HTTP 401).
- Tokens look like JWTs with an `exp` claim, so a client may read their real lifetime.
- Each input is a job of the fal emulator (its queue delay, inference time, faults, counters), and its
  request id comes back in the result (`request_id`) and in the timings message before it.
- Invalid input answers `x-fal-error` `VALIDATION_ERROR` with fal's 422 `detail` list as the reason; a
  failing job answers `INTERNAL_ERROR`; the socket stays open after both.
- With `max_buffering=N`, inputs that arrive while N already wait drop the oldest waiting one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import msgpack
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lightning_client.testing._fal_app import KEYS, _flat_error
from lightning_client.testing._fal_schema import APP_ID, image_size, validate_input
from lightning_client.testing._jobs import Job, wait_event
from lightning_client.testing._provider import ProviderCore, json_response
from lightning_client.testing._render import ImageSpec, content_type, render

__all__ = ["FalRealtime", "RealtimeSettings"]

IDLE_REASON = "no inputs, reconnect when needed!"
MAX_TOKEN_S = 24 * 3600


@dataclass(frozen=True)
class RealtimeSettings:
    """Settings of the realtime endpoint (`Sandbox.fal_realtime.configure(...)`)."""

    #: A socket with no input for this long gets `x-fal-error` TIMEOUT and is closed.
    idle_timeout_s: float = 60.0
    #: Tokens live min(requested, this) seconds (None: as requested).
    token_ttl_cap_s: float | None = None
    #: Refuse every socket (HTTP 403), as for an app without a realtime endpoint.
    refuse: bool = False

    def updated(self, changes: dict[str, Any]) -> RealtimeSettings:
        allowed = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValueError(
                f"unknown fal realtime setting(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        for key in ("idle_timeout_s", "token_ttl_cap_s"):
            if key not in changes or (key == "token_ttl_cap_s" and changes[key] is None):
                continue
            value = changes[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{key} must be a number of seconds > 0, got {value!r}")
        if not isinstance(changes.get("refuse", False), bool):
            raise ValueError(f"refuse must be true or false, got {changes['refuse']!r}")
        return dataclasses.replace(self, **changes)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


class FalRealtime:
    """The realtime routes of the fal emulator, bound to the fal provider core; handle methods are thread-safe."""

    def __init__(self, core: ProviderCore, files_url: str = "") -> None:
        self.core = core
        self.files_url = files_url  # where its output files are served: the run origin, like the socket
        self.settings = RealtimeSettings()
        self._tokens: dict[str, float] = {}
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- control ---------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change settings now (see `RealtimeSettings`); unknown keys or bad values raise ValueError."""
        with self._lock:
            self.settings = self.settings.updated(changes)

    def reset(self) -> None:
        """Default settings, tokens forgotten, counters at zero."""
        with self._lock:
            self.settings = RealtimeSettings()
            self._tokens.clear()
            self._counts.clear()

    def stats(self) -> dict[str, int]:
        """tokens issued, connections accepted and refused, inputs, results, errors and idle timeouts."""
        with self._lock:
            return dict(self._counts)

    def _count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def rest_routes(self) -> list[BaseRoute]:
        return [Route("/tokens/", self.tokens, methods=["POST"]), Route("/tokens", self.tokens, methods=["POST"])]

    def run_routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/{owner}/{app}/realtime", self.socket)]

    # -- tokens ----------------------------------------------------------------------------------

    async def tokens(self, request: Request) -> Response:
        """POST /tokens/ {"allowed_apps": [alias], "token_expiration": s}: a JWT-like token, as a JSON string."""
        denied = self.core.gate(request, "tokens", _flat_error, schemes=KEYS, injected=False)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        apps = body.get("allowed_apps") if isinstance(body, dict) else None
        ttl = body.get("token_expiration", 120) if isinstance(body, dict) else None
        if (
            not isinstance(apps, list)
            or not all(isinstance(a, str) and a for a in apps)
            or not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not 0 < ttl <= MAX_TOKEN_S
        ):
            detail = [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": "allowed_apps must be a list of app aliases and token_expiration seconds (1..86400)",
                    "input": body,
                }
            ]
            return json_response({"detail": detail}, 422)
        cap = self.settings.token_ttl_cap_s
        expires = time.time() + (ttl if cap is None else min(float(ttl), cap))
        claims = {"exp": round(expires, 3), "allowed_apps": apps, "jti": uuid.uuid4().hex}
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.sandbox"
        with self._lock:
            self._tokens[token] = expires
            self._counts["tokens"] += 1
        return json_response(token, 201)

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and time.time() < expires

    # -- the socket ------------------------------------------------------------------------------

    async def _refuse(self, websocket: WebSocket, status: int, detail: str) -> None:
        self._count("refused")
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(json_response({"detail": detail}, status))
        else:
            await websocket.close(code=1008, reason=detail)

    async def socket(self, websocket: WebSocket) -> None:
        """WS /{owner}/{app}/realtime: inputs in, results out, one at a time, until idle or closed."""
        self.core.count("realtime")
        app = f"{websocket.path_params['owner']}/{websocket.path_params['app']}"
        token = websocket.query_params.get("fal_jwt_token")
        scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
        if self.settings.refuse or app != APP_ID:
            return await self._refuse(websocket, 403, f"Application '{app}' has no realtime endpoint")
        if token is not None:
            if not self._token_valid(token):
                return await self._refuse(websocket, 401, "Invalid or expired fal_jwt_token")
        elif scheme.lower() not in KEYS or not self.core.token_ok(key.strip()):
            return await self._refuse(websocket, 401, "No user found for Key ID and Secret")
        buffering = websocket.query_params.get("max_buffering")
        limit: int | None = None
        if buffering is not None:
            if not buffering.isdigit() or not 1 <= int(buffering) <= 60:
                return await self._refuse(websocket, 400, "max_buffering must be an integer from 1 to 60")
            limit = int(buffering)
        await websocket.accept()
        self._count("connections")
        inbox: deque[Any] = deque()
        arrived = asyncio.Event()
        closed = asyncio.Event()

        async def receive() -> None:
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    raw = message.get("bytes")
                    try:
                        value = msgpack.unpackb(raw, raw=False) if raw is not None else json.loads(message["text"])
                    except (ValueError, msgpack.UnpackException, TypeError):
                        value = _Undecodable()
                    self._count("inputs")
                    inbox.append(value)
                    if limit is not None and len(inbox) > limit:
                        inbox.popleft()
                        self._count("dropped")
                    arrived.set()
            finally:
                closed.set()

        receiver = asyncio.ensure_future(receive())
        try:
            await self._serve(websocket, inbox, arrived, closed, app)
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def _serve(
        self, websocket: WebSocket, inbox: deque[Any], arrived: asyncio.Event, closed: asyncio.Event, app: str
    ) -> None:
        shutdown = self.core.closing or asyncio.Event()
        while not closed.is_set() and not shutdown.is_set():
            if not inbox:
                arrived.clear()
                waiters = [asyncio.ensure_future(e.wait()) for e in (arrived, closed, shutdown)]
                done, _ = await asyncio.wait(
                    waiters, timeout=self.settings.idle_timeout_s, return_when="FIRST_COMPLETED"
                )
                for waiter in waiters:
                    waiter.cancel()
                if not done:
                    self._count("timeouts")
                    await websocket.send_text(
                        json.dumps({"type": "x-fal-error", "error": "TIMEOUT", "reason": IDLE_REASON})
                    )
                    await websocket.close(code=1000)
                    return
                continue
            await self._answer(websocket, inbox.popleft(), app, closed)
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1001 if shutdown.is_set() else 1000)

    async def _error(self, websocket: WebSocket, error: str, reason: Any) -> None:
        self._count("errors")
        await websocket.send_text(json.dumps({"type": "x-fal-error", "error": error, "reason": reason}))

    async def _answer(self, websocket: WebSocket, value: Any, app: str, closed: asyncio.Event) -> None:
        if not isinstance(value, dict):
            await self._error(websocket, "VALIDATION_ERROR", "the input must be a msgpack (or JSON) map")
            return
        filled, errors = validate_input(value)
        if errors:
            await self._error(websocket, "VALIDATION_ERROR", json.dumps(errors))
            return
        core = self.core
        behaviour, draws = core.behaviour, core.draws
        seed = filled.get("seed")
        job = Job(
            id=str(uuid.UUID(int=draws.bits("id", 128), version=4)),
            input=filled,
            seed=int(draws.bits("seed", 32) if seed is None else seed),
            queue_s=behaviour.queue_s.sample(),
            inference_s=behaviour.inference_s.sample(),
            fault=draws.fault(behaviour.faults),
            meta={"app": app, "validation": [], "realtime": True},
        )
        job.logs.append(f"Generating with seed {job.seed}")
        core.engine.submit(job)
        if job.fault == "reset":
            await websocket.close(code=1011)
            return
        if job.fault == "hang":
            await wait_event(closed, 300.0)
            return
        await job.done.wait()
        if job.state != "succeeded":
            await self._error(websocket, "INTERNAL_ERROR", job.error or "the request failed")
            return
        inference = round(job.predict_time() or 0.0, 6)
        await websocket.send_text(
            json.dumps(
                {
                    "type": "x-fal-message",
                    "action": "timings",
                    "timings": {"inference": inference},
                    "request_id": job.id,
                }
            )
        )
        files: dict[str, ImageSpec] = job.meta["files"]
        images: list[dict[str, Any]] = []
        for name, spec in files.items():
            image: dict[str, Any] = {
                "content_type": content_type(spec.format),
                "width": spec.width,
                "height": spec.height,
                "file_name": name,
            }
            if filled["sync_mode"]:
                image["content"] = await asyncio.to_thread(render, spec)
            else:
                image["url"] = f"{self.files_url}/files/{job.id}/{name}"
            images.append(image)
        width, height = image_size(filled)
        body = {
            "images": images,
            "timings": {"inference": inference},
            "seed": job.seed,
            "has_nsfw_concepts": [bool(job.meta["nsfw"])] * len(images),
            "prompt": filled["prompt"],
            "request_id": job.id,
            "image_size": {"width": width, "height": height},
        }
        await websocket.send_bytes(msgpack.packb(body, use_bin_type=True))
        self._count("results")


class _Undecodable:
    """An input frame that was neither msgpack nor JSON."""
