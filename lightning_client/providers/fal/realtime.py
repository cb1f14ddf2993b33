"""fal's realtime WebSocket for `FalGenerator.realtime()`: token, socket, msgpack frames, errors, fallback.

- Token: `POST {rest}/tokens/` with the key and `{"allowed_apps": [alias], "token_expiration": 120}`; the
  answer is a JSON string (older: `{"token": ...}`). A token is used for new sockets only until 90% of
  its life (its JWT `exp` when readable, else the lifetime asked for), and refreshed in the background
  at that point while the session lasts, so a reconnect never waits on it or uses an expired one.
- Socket: `{run host as ws}/{owner}/{app}/realtime?fal_jwt_token=...`. Inputs go out as msgpack maps
  (`sync_mode: true`, so images come back in the frame); results come back as binary msgpack, one per
  input, in order. Text frames are JSON: `x-fal-message` (timings, where fal may put the request id) and
  `x-fal-error`, mapped onto the error taxonomy. An idle socket ends with `TIMEOUT`; the next job opens
  a new one.
- A refused handshake (fal answers HTTP instead of switching protocols: the app has no realtime
  endpoint, or not for this account) falls back to the queue API, with a typed warning on every result.
- The socket cannot cancel a job, so the session lets a running job finish before it sends the next.
  A job abandoned on the socket (session closed) still runs on fal; its cost is recorded as estimated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger, mask_secrets
from lightning_client.errors import (
    GenerationTimeoutError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities
from lightning_client.images import DecodedImage, convert_image, decode_data_uri, decode_image
from lightning_client.providers._http import ERROR_CODES, ErrorHints, _tls_context, auth_header, send
from lightning_client.providers.fal import wire
from lightning_client.providers.fal.pricing import FalPricing
from lightning_client.realtime_backend import GeneratorBackend, RealtimeBackend
from lightning_client.realtime_contract import Transport
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GeneratedImage, GenerationResult, GenerationWarning, Timings

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = ["FalRealtimeBackend", "FalSocketAccess"]

log = get_logger("lightning_client.providers.fal")

#: fal's REST host for tokens (`FalGenerator.rest_url` defaults to the platform API host).
DEFAULT_TOKEN_URL = "https://rest.fal.ai"
TOKEN_EXPIRATION_S = 120
#: Share of a token's life after which it is no longer used for a new socket.
TOKEN_REFRESH_AT = 0.9
OPEN_TIMEOUT_S = 30.0
#: Longest wait for one result on the socket.
RESULT_TIMEOUT_S = 120.0


def realtime_error(error: str, reason: str, request_id: str | None = None) -> LightningError:
    """Map an `x-fal-error` frame (`error`, `reason`) onto the taxonomy; unknown codes are response errors."""
    cls = ERROR_CODES.get(error.upper(), ProviderResponseError)
    text = f"fal realtime error {error}" + (f": {mask_secrets(reason)}" if reason else "")
    return cls(text, request_id=request_id)  # the attempt fills in the generator's name


@dataclass(frozen=True)
class FalSocketAccess:
    """What a realtime session uses of its `FalGenerator`: given by the generator, so this module never
    reaches into it."""

    #: The generator itself: the queue-API fallback, and the name, model and capabilities of every attempt.
    generator: BaseGenerator
    #: The endpoint id (`owner/app[/path]`) and the run and platform API roots.
    app: str
    run_url: str
    rest_url: str
    hints: ErrorHints
    pricing: FalPricing
    #: The generator's HTTP client for the running event loop.
    client: Callable[[], httpx.AsyncClient]
    #: The fal key (AuthenticationError when there is none).
    key: Callable[[], SecretStr]
    #: Download one output file: (client, url, request id) -> (image, seconds).
    download: Callable[[httpx.AsyncClient, str, str], Awaitable[tuple[DecodedImage, float]]]


class _IdleClosed(ProviderUnavailableError):
    """fal closed the socket as idle ("no inputs"): an input sent meanwhile was not run."""


class _Refused(Exception):
    """The realtime handshake was answered with HTTP `status` instead of a switch to WebSocket."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class _Waiter:
    """One input sent on the socket, waiting for its result frame."""

    future: asyncio.Future[dict[str, Any]]
    request_id: str | None = None


@dataclass
class _Socket:
    ws: ClientConnection
    waiters: deque[_Waiter] = field(default_factory=deque)
    reader: asyncio.Task[None] | None = None
    closed: bool = False


def _token_expiry(token: str, fetched: float, asked_s: float) -> float:
    """When the token expires (monotonic): its JWT `exp` when readable, else the lifetime asked for."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        lifetime = float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError):
        lifetime = asked_s
    return fetched + max(0.0, min(lifetime, asked_s))


class _SocketAttempts(BaseGenerator):
    """Each realtime job as an attempt of "fal": deadline, error mapping and ledger events from the base class."""

    def __init__(self, backend: FalRealtimeBackend) -> None:
        self._backend = backend
        self.name = backend.fal.generator.name
        self.model = backend.fal.generator.model

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.fal.generator.capabilities

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        return await self._backend.exchange(ctx)


class FalRealtimeBackend(RealtimeBackend):
    """A session on fal's realtime WebSocket, falling back to the queue API when the socket is refused."""

    def __init__(self, fal: FalSocketAccess) -> None:
        self.fal = fal
        rest = fal.rest_url
        self.token_url = DEFAULT_TOKEN_URL if rest == "https://api.fal.ai" else rest
        run = fal.run_url
        self.socket_url = (
            ("wss" + run.removeprefix("https")) if run.startswith("https") else "ws" + run.removeprefix("http")
        )
        self.alias = fal.app.split("/")[1]
        self._attempts = _SocketAttempts(self)
        self._socket: _Socket | None = None
        self._token: tuple[str, float] | None = None  # the token, and until when (monotonic) it is used
        self._refresher: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._fallback: GeneratorBackend | None = None
        self.connections = 0
        self.tokens_fetched = 0

    # -- backend contract ------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        return self.fal.generator.name

    @property
    def transport(self) -> Transport:
        return "queue" if self._fallback is not None else "websocket"

    @property
    def emulated(self) -> bool:  # type: ignore[override]
        return self._fallback is not None

    @property
    def cancellable(self) -> bool:
        return self._fallback is not None  # the queue API cancels by id; the socket cannot

    @property
    def capabilities(self) -> Capabilities:
        return self.fal.generator.capabilities

    @property
    def warnings(self) -> list[GenerationWarning]:
        return self._fallback.warnings if self._fallback is not None else []

    async def start(self) -> None:
        await self._connected()
        if self._fallback is None:  # the price is known by the first frame, not looked up on it
            self.fal.pricing.prefetch(self.fal.client(), self.fal.key())

    async def run(self, request: GenerationRequest) -> GenerationResult:
        if self._fallback is None:
            await self._connected()
        if self._fallback is not None:
            return await self._fallback.run(request)
        return await self._attempts.agenerate(request)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self._drop(self._socket)

    # -- token -----------------------------------------------------------------------------------

    async def _fetch_token(self) -> str:
        client = self.fal.client()
        response = await send(
            client,
            "POST",
            f"{self.token_url}/tokens/",
            provider=self.provider,
            what="realtime token",
            hints=self.fal.hints,
            headers=auth_header("Key", self.fal.key()),
            json_body={"allowed_apps": [self.alias], "token_expiration": TOKEN_EXPIRATION_S},
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):  # older answers: {"token": ...} (or, oddly, {"detail": ...})
            body = body.get("token") or body.get("detail")
        if not isinstance(body, str) or not body:
            raise ProviderResponseError("the realtime tokens route answered without a token", provider=self.provider)
        fetched = time.monotonic()
        expiry = _token_expiry(body, fetched, TOKEN_EXPIRATION_S)
        self._token = (body, fetched + (expiry - fetched) * TOKEN_REFRESH_AT)
        self.tokens_fetched += 1
        return body

    async def _refresh_loop(self) -> None:
        """Fetch a new token as the current one reaches 90% of its life, while the session lasts."""
        while self._token is not None:
            await asyncio.sleep(max(0.0, self._token[1] - time.monotonic()))
            try:
                await self._fetch_token()
            except LightningError as exc:
                log.debug("fal realtime token refresh failed (%s); a new one is fetched on the next connect", exc)
                return

    async def _usable_token(self) -> str:
        token = self._token[0] if self._token is not None and time.monotonic() < self._token[1] else None
        if token is None:
            token = await self._fetch_token()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())
        return token

    # -- socket ----------------------------------------------------------------------------------

    async def _connected(self) -> _Socket | None:
        """The open socket, connecting when there is none; None after a fallback to the queue."""
        if self._fallback is not None:
            return None
        if self._socket is not None and not self._socket.closed:
            return self._socket
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._socket is not None and not self._socket.closed:
                return self._socket
            token = await self._usable_token()
            try:
                ws = await self._open(token)
            except _Refused as refused:
                if refused.status == 401 and self._token is not None and self._token[0] == token:
                    # The token may have expired on fal's clock: one more try with a new one.
                    try:
                        ws = await self._open(await self._fetch_token())
                    except _Refused as again:
                        self._fall_back(again.status)
                        return None
                else:
                    self._fall_back(refused.status)
                    return None
            socket = _Socket(ws)
            socket.reader = asyncio.get_running_loop().create_task(self._read(socket))
            self._socket = socket
            self.connections += 1
            return socket

    async def _open(self, token: str) -> ClientConnection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        url = f"{self.socket_url}/{self.fal.app}/realtime?{urlencode({'fal_jwt_token': token})}"
        try:
            # wss: the same verifying roots as the generator's HTTP (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
            if url.startswith("wss:"):
                return await connect(
                    url, max_size=None, open_timeout=OPEN_TIMEOUT_S, compression=None, ssl=_tls_context()
                )
            return await connect(url, max_size=None, open_timeout=OPEN_TIMEOUT_S, compression=None)
        except InvalidStatus as exc:
            raise _Refused(exc.response.status_code) from None
        except InvalidHandshake as exc:
            raise ProviderUnavailableError(f"fal realtime handshake failed: {exc}", provider=self.provider) from None
        except (OSError, TimeoutError) as exc:
            raise ProviderUnavailableError(
                f"cannot reach fal's realtime endpoint {self.socket_url}: {type(exc).__name__}: {exc}",
                provider=self.provider,
            ) from None

    def _fall_back(self, status: int) -> None:
        message = (
            f"fal refused the realtime WebSocket for {self.fal.app} (HTTP {status}); "
            "the session uses the queue API instead, cancelling superseded requests"
        )
        log.warning("%s", message)
        warning = GenerationWarning(kind="emulated", setting="realtime", message=message, provider=self.provider)
        self._fallback = GeneratorBackend(self.fal.generator, transport="queue", emulated=True, warnings=[warning])

    async def _read(self, socket: _Socket) -> None:
        """Hand each result frame to the oldest waiting input; fail them all when the socket ends."""
        import msgpack
        from websockets.exceptions import ConnectionClosed

        failure: LightningError | None = None
        try:
            async for message in socket.ws:
                body: Any
                try:
                    body = json.loads(message) if isinstance(message, str) else msgpack.unpackb(message, raw=False)
                except (ValueError, msgpack.UnpackException) as exc:
                    if isinstance(message, str):
                        continue  # text that is not JSON carries nothing for us
                    body = ProviderResponseError(f"undecodable msgpack frame: {exc}")
                # Control messages come as JSON text; they are recognised in binary frames too.
                if isinstance(body, dict) and body.get("type") in ("x-fal-message", "x-fal-error"):
                    failure = self._control(socket, body)
                    if failure is not None:
                        break
                elif not isinstance(message, str):
                    self._deliver(socket, body)
        except ConnectionClosed:
            pass
        finally:
            socket.closed = True
            if failure is None:
                failure = ProviderUnavailableError(
                    "fal's realtime socket closed before the result came back; the request may have run",
                    provider=self.provider,
                    outcome_unknown=True,
                )
            while socket.waiters:
                waiter = socket.waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(failure)
            with contextlib.suppress(Exception):
                await socket.ws.close()

    def _control(self, socket: _Socket, body: dict[str, Any]) -> LightningError | None:
        """An `x-fal-message` or `x-fal-error`; returns the error that ends the socket, if it is one."""
        if body.get("type") == "x-fal-message":
            request_id = body.get("request_id")
            if isinstance(request_id, str) and socket.waiters:
                socket.waiters[0].request_id = request_id
            return None
        error, reason = str(body.get("error") or "UNKNOWN_ERROR"), str(body.get("reason") or "")
        if error == "TIMEOUT":  # idle: fal closes the socket; inputs just sent were not run
            log.debug("fal realtime socket idle (%s); reconnecting on the next send", reason)
            return _IdleClosed(f"fal closed the realtime socket as idle: {mask_secrets(reason)}")
        self._deliver(socket, realtime_error(error, reason))
        return None

    @staticmethod
    def _deliver(socket: _Socket, body: Any) -> None:
        """Answer the oldest input with this frame (one frame per input, in order)."""
        if not socket.waiters:
            log.debug("fal realtime frame with no input waiting for it; ignored")
            return
        waiter = socket.waiters.popleft()
        if waiter.future.done():  # abandoned by its caller: this frame was its answer
            return
        if isinstance(body, LightningError):
            body.request_id = body.request_id or waiter.request_id
            waiter.future.set_exception(body)
        elif isinstance(body, dict):
            if waiter.request_id and "request_id" not in body:
                body["request_id"] = waiter.request_id
            waiter.future.set_result(body)
        else:
            waiter.future.set_exception(ProviderResponseError("result frame is not a map"))

    async def _drop(self, socket: _Socket | None) -> None:
        if socket is None:
            return
        socket.closed = True
        with contextlib.suppress(Exception):
            await socket.ws.close()
        if socket.reader is not None:
            socket.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await socket.reader

    # -- one job ---------------------------------------------------------------------------------

    async def exchange(self, ctx: AttemptContext) -> GenerationResult:
        """Send one input on the socket and turn its result frame into a `GenerationResult`.

        When fal closes the socket as idle just as the input goes out, the input was not run
        ("no inputs"), so it is sent once more on a new socket.
        """
        arguments = {**wire.arguments(ctx), "sync_mode": True}
        for retry in (False, True):
            socket = await self._connected()
            if socket is None:  # refused just now: the session moves to the queue on the next job
                raise ProviderUnavailableError(
                    "fal refused the realtime socket; retry on the queue API", provider=self.provider
                )
            sent = time.monotonic()
            try:
                output = await self._exchange_once(ctx, socket, arguments)
            except _IdleClosed:
                if retry:
                    raise
                log.debug("fal closed the realtime socket as idle while an input went out; sending it again")
                continue
            request_id = output.get("request_id")
            if isinstance(request_id, str) and request_id:
                ctx.job_started(request_id)
            return await self._result(ctx, output, time.monotonic() - sent)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange_once(self, ctx: AttemptContext, socket: _Socket, arguments: dict[str, Any]) -> dict[str, Any]:
        import msgpack

        waiter = _Waiter(asyncio.get_running_loop().create_future())
        socket.waiters.append(waiter)
        try:
            await socket.ws.send(msgpack.packb(arguments, use_bin_type=True))
        except Exception as exc:  # noqa: BLE001 - any send failure means the socket is gone
            socket.closed = True
            with contextlib.suppress(ValueError):
                socket.waiters.remove(waiter)
            raise ProviderUnavailableError(
                f"fal realtime send failed: {type(exc).__name__}; nothing was sent", provider=self.provider
            ) from None
        try:
            async with async_timeout(RESULT_TIMEOUT_S):
                return await asyncio.shield(waiter.future)
        except asyncio.CancelledError:
            # Nobody waits for it any more, but fal still runs it: the reader skips its frame.
            waiter.future.cancel()
            ctx.add_cost(await self._cost(None, ctx.request.num_images, "abandoned on the socket"))
            raise
        except TIMEOUT_ERRORS:
            waiter.future.cancel()
            raise GenerationTimeoutError(
                f"no realtime result within {RESULT_TIMEOUT_S:.0f} s", provider=self.provider, outcome_unknown=True
            ) from None

    async def _result(self, ctx: AttemptContext, output: dict[str, Any], waited_s: float) -> GenerationResult:
        request_id = ctx.attempt.request_id
        entries = output.get("images")
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ProviderResponseError("realtime result has no images", provider=self.provider, request_id=request_id)
        nsfw = wire.nsfw_flags(ctx.request, output, len(entries), provider=self.provider, request_id=request_id)
        started = time.monotonic()
        images: list[GeneratedImage] = []
        for index, entry in enumerate(entries):
            decoded = await self._image(entry, request_id)
            if decoded.format != ctx.request.output_format:
                decoded = await asyncio.to_thread(convert_image, decoded, ctx.request.output_format)
            url = entry.get("url") if isinstance(entry.get("url"), str) else None
            images.append(decoded.to_generated(url=url, nsfw=nsfw[index] if index < len(nsfw) else None))
        timings_body = output.get("timings")
        inference = timings_body.get("inference") if isinstance(timings_body, dict) else None
        inference_s = (
            float(inference) if isinstance(inference, (int, float)) and not isinstance(inference, bool) else None
        )
        ctx.add_cost(await self._cost(inference_s, len(images)))
        queue_s = None if inference_s is None else max(0.0, waited_s - inference_s)
        timings = Timings(queue_s=queue_s, inference_s=inference_s, download_s=time.monotonic() - started)
        return ctx.result(images, model=self.fal.generator.model, seed=wire.seed_used(ctx, output), timings=timings)

    async def _image(self, entry: dict[str, Any], request_id: str | None) -> Any:
        content = entry.get("content")
        declared = entry.get("content_type") if isinstance(entry.get("content_type"), str) else None
        try:
            if isinstance(content, (bytes, bytearray)):
                return await asyncio.to_thread(
                    decode_image, bytes(content), provider=self.provider, declared_type=declared
                )
            url = entry.get("url")
            if isinstance(url, str) and url.startswith("data:"):
                data, kind = decode_data_uri(url, provider=self.provider)
                return await asyncio.to_thread(
                    decode_image, data, provider=self.provider, declared_type=kind or declared
                )
            if isinstance(url, str):
                image, _ = await self.fal.download(self.fal.client(), url, request_id or "")
                return image
        except LightningError as exc:
            exc.request_id = exc.request_id or request_id
            raise
        raise ProviderResponseError(
            "realtime image has neither content nor url", provider=self.provider, request_id=request_id
        )

    async def _cost(self, inference_s: float | None, images: int, note: str = "") -> Cost:
        """fal's unit price x the units a realtime frame implies (no billable-units header on a socket)."""
        return await self.fal.pricing.cost(self.fal.client(), self.fal.key(), None, images, inference_s, note=note)
