"""HTTP client pooling for the hosted backends: one set of httpx clients per generator and event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager

import certifi
import httpx
from pydantic import SecretStr

from lightning_client import _background
from lightning_client._log import get_logger
from lightning_client._sync import PerLoop
from lightning_client._version import __version__
from lightning_client.providers._http.network import asyncio_transport
from lightning_client.providers._http.tasks import keep

log = get_logger("lightning_client.providers.http")

USER_AGENT = f"lightning-client/{__version__}"


def make_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """An explicit httpx timeout: `timeout` seconds for reads, at most 10 s to connect."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(10.0, timeout), pool=min(10.0, timeout))


class _ClientShards:
    """Several `httpx.AsyncClient`s for one event loop, each request given the least busy one.

    httpcore's pool rescans every connection and queued request on each request event, so
    one pool's CPU cost per request grows with the requests in flight; pools of at most
    `SHARD_CONNECTIONS` connections keep it flat (measured in benchmarks/concurrency.py).
    Requests one at a time all go to the first client, so they share one warm connection.
    """

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._busy = [0] * len(clients)

    def _idlest(self) -> int:
        """The index of the client with the fewest leases (the first of those equally busy)."""
        return self._busy.index(min(self._busy))

    def idlest(self) -> httpx.AsyncClient:
        return self.clients[self._idlest()]

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        """The idlest client, counted busy until the block ends."""
        busy = self._busy
        index = self._idlest()
        busy[index] += 1
        try:
            yield self.clients[index]
        finally:
            busy[index] -= 1

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))


#: The most connections one httpx client (one pool) is given.
SHARD_CONNECTIONS = 16


def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context: certifi's roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (as httpx does)."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    return _tls_context_for(cafile, None if cafile else os.environ.get("SSL_CERT_DIR") or None)


@functools.cache
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One context per CA setting, shared by every client: loading a CA bundle costs ~30 ms each time."""
    if cafile is None and capath is None:
        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


class HttpClients:
    """The HTTP clients of one generator, per event loop (pooled connections, explicit limits)."""

    def __init__(self, *, timeout: httpx.Timeout, max_connections: int) -> None:
        self.timeout = timeout
        shards = math.ceil(max_connections / SHARD_CONNECTIONS)
        per_shard = math.ceil(max_connections / shards)
        self._limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._shards = shards
        self._clients: PerLoop[_ClientShards] = PerLoop(self._new)

    def _new(self) -> _ClientShards:
        context = _tls_context()
        # httpx ignores the environment's proxies when given a transport: with proxies set, it keeps its own.
        direct = not any(urllib.request.getproxies().get(scheme) for scheme in ("http", "https", "all"))
        return _ClientShards(
            [
                httpx.AsyncClient(
                    transport=asyncio_transport(ssl_context=context, limits=self._limits) if direct else None,
                    timeout=self.timeout,
                    limits=self._limits,
                    headers={"User-Agent": USER_AGENT},
                    follow_redirects=False,
                    verify=context,
                )
                for _ in range(self._shards)
            ]
        )

    def get(self) -> httpx.AsyncClient:
        """A client for the running loop: the idlest one when the pool is sharded (for a single request)."""
        return self._clients.get().idlest()

    def lease(self) -> AbstractContextManager[httpx.AsyncClient]:
        """A client for the running loop, for the requests of one generation: the idlest one, counted
        busy until the block ends, so that concurrent generations spread over the shards."""
        return self._clients.get().lease()

    async def aclose(self, drain_s: float = 5.0) -> None:
        """Close the running loop's clients, after giving background work up to `drain_s` to finish: remote
        cancels in progress, and abandoned creates still waiting for their answer (to cancel the job it names).

        Closing the client aborts what is still unanswered after that.
        """
        await _background.drain(drain_s)
        shards = self._clients.pop_current()
        if shards is not None:
            await shards.aclose()

    def close_all(self) -> None:
        """Close every client from synchronous code (each on its own loop when that loop still runs)."""
        for loop, shards in self._clients.pop_all():
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                keep(loop.create_task(shards.aclose()))
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(_drained_close(shards), loop)
                try:
                    future.result(timeout=11)
                except Exception:
                    log.debug("closing an HTTP client timed out or failed", exc_info=True)


def auth_header(scheme: str, secret: SecretStr) -> dict[str, str]:
    """The Authorization header; built per call so the raw secret is never stored."""
    return {"Authorization": f"{scheme} {secret.get_secret_value()}"}


async def _drained_close(shards: _ClientShards, drain_s: float = 5.0) -> None:
    """Close `shards` once background work on their loop is done (or `drain_s` passed)."""
    await _background.drain(drain_s)
    await shards.aclose()
