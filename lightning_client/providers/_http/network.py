"""A plain-asyncio network backend for httpcore, under the hosted backends' HTTP clients.

httpcore's default backend goes through anyio, which opens a cancel scope (and arms a timer) for
every read and write. Reading from an asyncio protocol's buffer needs neither: a timer is armed only
when a read has to wait. Measured with `benchmarks/cpu_cost.py`'s raw loop against the sandbox, this
takes about 15% off a request's client CPU. Connections and TLS otherwise behave as httpx's
own: the pool, HTTP/1.1 parsing and the exception mapping are httpx's and httpcore's, unchanged. When
the environment names a proxy, the clients keep httpx's own transports, which route through it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx

#: Above this many unread bytes the socket stops being read until the reader catches up.
READ_HIGH_WATER = 256 * 1024
#: Happy-eyeballs delay between connection attempts to a host's addresses (RFC 8305's recommended value).
HAPPY_EYEBALLS_DELAY_S = 0.25

#: httpcore's names for a stream's details, and the asyncio transport's.
_TRANSPORT_INFO = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Reader(asyncio.Protocol):
    """Buffers what the socket delivers; wakes the one waiting read; pauses the socket when unread bytes pile up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        #: The pending read's future, and the pending write's (waiting for the socket to drain).
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        _wake(self.read_waiter)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.read_waiter)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        _wake(self.read_waiter)
        _wake(self.drain_waiter)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.drain_waiter)

    def take(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` buffered bytes (resuming the socket once the buffer has drained)."""
        if len(self.buffer) <= max_bytes:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
        if self.reading_paused and len(self.buffer) <= READ_HIGH_WATER // 2 and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def readable(self, timeout: float | None) -> None:
        """Until data, EOF or the connection's loss; `httpcore.ReadTimeout` after `timeout` seconds."""
        self.read_waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await _within(waiter, timeout, httpcore.ReadTimeout)
        finally:
            self.read_waiter = None

    async def drained(self, timeout: float | None) -> None:
        """Until the socket takes writes again or is lost; `httpcore.WriteTimeout` after `timeout` seconds."""
        self.drain_waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await _within(waiter, timeout, httpcore.WriteTimeout)
        finally:
            self.drain_waiter = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _within(waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]) -> None:
    """Await `waiter`, failing it with `error` after `timeout` seconds (a timer is armed only here, when waiting)."""
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter, error)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection (plain or TLS) as httpcore reads and writes it."""

    def __init__(self, transport: asyncio.Transport, reader: _Reader) -> None:
        self._transport = transport
        self._reader = reader

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reader = self._reader
        while not reader.buffer and not reader.eof:
            await reader.readable(timeout)
        if reader.buffer:
            return reader.take(max_bytes)
        if reader.error is not None:
            raise httpcore.ReadError(f"{type(reader.error).__name__}: {reader.error}")
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        reader = self._reader
        if self._transport.is_closing() or reader.error is not None:
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        while reader.writing_paused and not reader.eof:  # the kernel's buffer is full: wait until it drains
            await reader.drained(timeout)
        if reader.error is not None:
            raise httpcore.WriteError(f"{type(reader.error).__name__}: {reader.error}")

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                self._transport,
                self._reader,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout if timeout else None,
            )
        except (TimeoutError, asyncio.TimeoutError) as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        if tls is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._reader.transport = tls
        return AsyncioStream(tls, self._reader)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # The loop reads every socket into its buffer as data arrives: an idle connection with
            # something buffered, or closed by the peer, must not be reused.
            return self._reader.eof or bool(self._reader.buffer)
        name = _TRANSPORT_INFO.get(info)
        return None if name is None else self._transport.get_extra_info(name)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens connections on the running asyncio loop (TCP with happy eyeballs, or a Unix socket)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = None if local_address is None else (local_address, 0)
        # The standard loops try a host's addresses happy-eyeballs style; others (uvloop) take no such option.
        if isinstance(loop, asyncio.BaseEventLoop):
            connecting = loop.create_connection(
                _Reader, host, port, local_addr=local, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S
            )
        else:
            connecting = loop.create_connection(_Reader, host, port, local_addr=local)
        return await _connected(connecting, timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connected(loop.create_unix_connection(_Reader, path), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    connecting: Any, timeout: float | None, socket_options: Iterable[SocketOption] | None
) -> AsyncioStream:
    """The stream of a connection being opened, with httpcore's socket options set on its socket."""
    try:
        transport, reader = await asyncio.wait_for(connecting, timeout)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise httpcore.ConnectTimeout(str(exc) or "connect timed out") from exc
    except OSError as exc:  # socket.gaierror included
        raise httpcore.ConnectError(f"{type(exc).__name__}: {exc}") from exc
    sock = transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(cast(asyncio.Transport, transport), cast(_Reader, reader))


def asyncio_transport(*, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport (request mapping, exception mapping) over a connection pool on `AsyncioBackend`.

    httpx takes no network backend of its own, so its pool is replaced by one built with the same
    settings; `tests/providers/test_http_network.py` checks that a client really uses it.
    """
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport
