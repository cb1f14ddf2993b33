"""The plain-asyncio network backend under the hosted clients, against real loopback servers (TCP and TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from lightning_client.providers._http.clients import HttpClients, make_timeout
from lightning_client.providers._http.network import READ_HIGH_WATER, AsyncioBackend, asyncio_transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server running `handler` per connection; yields its base URL and the connection count."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head + await reader.readexactly(length)


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for localhost from a throwaway CA, and a client context trusting it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return server_context, trusting


def client(timeout: float | httpx.Timeout = 5.0, context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    transport = asyncio_transport(ssl_context=context or ssl.create_default_context(), limits=limits)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


async def test_the_generators_clients_run_on_the_asyncio_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()

    clients = HttpClients(timeout=make_timeout(5.0), max_connections=8)
    http = clients.get()
    transport = http._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
    async with serving(answer) as (url, connections):
        assert [(await http.get(url)).text for _ in range(3)] == ["ok"] * 3
        assert len(connections) == 1  # kept alive and reused
    await clients.aclose()


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serving(silent) as (url, _), client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(url)


async def test_a_reset_or_a_close_before_the_answer_is_a_transport_error() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        writer.transport.abort()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with client() as http:
        async with serving(reset) as (url, _):
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.get(url)
        async with serving(hang_up) as (url, _):
            with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
                await http.get(url)


async def test_refused_connections_are_connect_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket is closed
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_large_bodies_both_ways_arrive_whole_with_the_socket_paused_and_resumed() -> None:
    body = bytes(range(256)) * (32 * READ_HIGH_WATER // 256 + 7)  # 8 MiB: more than the kernel buffers hold

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)  # a slow server: the client's writes wait for the socket to drain
        request = await read_request(reader)
        upload = request.split(b"\r\n\r\n", 1)[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(upload) + upload)
        await writer.drain()

    async with serving(echo) as (url, _), client() as http:
        async with http.stream("POST", url, content=body) as response:
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0.001)  # a slow reader: the buffer passes its high-water mark
        assert bytes(received) == body


async def test_a_server_that_never_reads_is_a_write_timeout() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    # Only the write waits 0.3 s: a loaded machine may take longer than that to connect on loopback.
    async with serving(deaf) as (url, _), client(timeout=httpx.Timeout(5.0, write=0.3)) as http:
        with pytest.raises(httpx.WriteTimeout):
            await http.post(url, content=b"x" * (64 * 1024 * 1024))


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)  # keep-alive by default, then closed anyway
        await writer.drain()

    async with serving(once) as (url, connections), client() as http:
        assert (await http.get(url)).text == "ok"
        await asyncio.sleep(0.1)  # the close reaches the client while the connection sits idle in the pool
        assert (await http.get(url)).text == "ok"
        assert len(connections) == 2


async def test_https_is_verified_against_the_given_context() -> None:
    server_context, trusting = tls_pair()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    async with serving(answer, tls=server_context) as (url, _):
        async with client(context=trusting) as http:
            response = await http.get(url)
            assert response.text == "ok"
        async with client() as http:  # the system roots do not know the throwaway CA
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url)


def test_the_backend_runs_on_uvloop_too() -> None:
    """Our server and Ray Serve run on uvloop when it is installed; its loop takes no happy-eyeballs option."""
    uvloop = pytest.importorskip("uvloop")
    server_context, trusting = tls_pair()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()

    async def both() -> list[str]:
        texts = []
        for tls in (None, server_context):
            async with serving(answer, tls=tls) as (url, _), client(context=trusting) as http:
                texts += [(await http.get(url)).text for _ in range(2)]
        return texts

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(both()) == ["ok"] * 4
    finally:
        loop.close()


async def test_a_proxy_from_the_environment_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx drops the environment's proxies when given a transport; the clients then keep httpx's own."""
    requests: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append((await read_request(reader)).split(b"\r\n", 1)[0])
        writer.write(OK)
        await writer.drain()

    async with serving(proxy) as (proxy_url, _):
        for variable in PROXY_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
            monkeypatch.delenv(variable.lower(), raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        clients = HttpClients(timeout=make_timeout(5.0), max_connections=4)
        response = await clients.get().get("http://images.example.invalid/a.png")
        await clients.aclose()
    assert response.text == "ok"
    assert requests == [b"GET http://images.example.invalid/a.png HTTP/1.1"]  # absolute form: sent to the proxy
