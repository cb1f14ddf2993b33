"""`Sandbox`: loopback Replicate and fal emulators on ephemeral ports, served from a background thread.

```python
from lightning_client.testing import Sandbox, Latency

with Sandbox() as sb:
    sb.replicate.configure(inference_s=Latency.uniform(0.05, 0.2), fault="nsfw")
    client = replicate.Client(api_token="r8_test", base_url=sb.replicate_url)
```

Each endpoint of each emulated provider (`lightning_client.testing.emulators`: the Replicate API, then
fal's queue, sync run and REST endpoints, then any registered since) listens on its own socket; one
uvicorn server on one event loop in one daemon thread serves them all, dispatching on the local port.
`Sandbox(tls=True)` serves them over HTTPS with a throwaway certificate authority (`ca_bundle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import uvicorn

from lightning_client.errors import ConfigurationError
from lightning_client.registry import generator_class
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.testing._behaviour import Latency
from lightning_client.testing._fal_emulator import FalEmulation
from lightning_client.testing._fal_realtime_app import FalRealtime
from lightning_client.testing._provider import ProviderCore
from lightning_client.testing._webhooks import FAL_USER_ID
from lightning_client.testing.emulators import ASGIApp, Emulation, Emulator, emulator, emulators

__all__ = ["Latency", "ProviderHandle", "Sandbox"]


class ProviderHandle:
    """Controls one emulated provider at run time; every method is thread-safe."""

    def __init__(self, emulator: Emulator, emulation: Emulation, sandbox: Sandbox) -> None:
        self._emulator = emulator
        self._core = emulation.core
        self._sandbox = sandbox

    @property
    def name(self) -> str:
        """The provider's kind: 'replicate', 'fal', or a registered emulator's name."""
        return self._emulator.name

    @property
    def url(self) -> str:
        """The base URL of its first endpoint: `Sandbox.replicate_url`, `Sandbox.fal_url` (the queue), ..."""
        return self._sandbox.url(self._emulator.endpoints[0])

    def configure(self, **behaviour: Any) -> None:
        """Change settings now (see docs/sandbox.md); unknown keys or bad values raise ValueError."""
        self._core.configure(behaviour)

    def reset(self) -> None:
        """Default settings, every job canceled and forgotten, counters at zero."""
        self._sandbox._call_on_loop(self._core.reset)

    def stats(self) -> dict[str, Any]:
        """created/queued/running/succeeded/failed/canceled/aborted jobs and `requests` by route kind."""
        return self._core.stats()

    def jobs(self) -> list[dict[str, Any]]:
        """A snapshot of every job (id, status, input, seed, fault, error, created/started/completed_at)."""
        return self._core.engine.snapshot()

    def __repr__(self) -> str:
        return f"<ProviderHandle {self.name} {self._core.behaviour}>"


class Sandbox(SandboxEndpoints):
    """Loopback emulators of Replicate, fal and every other registered emulated provider; a sync and async
    context manager."""

    def __init__(
        self,
        *,
        seed: int = 0,
        replicate: bool = True,
        fal: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout_s: float = 10.0,
        tls: bool = False,
    ) -> None:
        """`port=0` picks free ports; `port=N` serves Replicate on N and the fal endpoints on N+1, N+2, N+3
        (then the endpoints of emulators registered since, on the ports after). `replicate=False` or
        `fal=False` leaves that provider out (the others move down to fill its ports).

        `tls=True` serves every endpoint (files included) over HTTPS, with a certificate from a certificate
        authority made for this sandbox (needs `trustme`, in the `sandbox` extra); trust it through `env()`
        or `ca_bundle`.
        """
        self.seed = seed
        self.host = host
        self.tls = tls
        self._tls_dir: Path | None = None
        self._port = port
        self._start_timeout_s = start_timeout_s
        left_out = {name for name, on in (("replicate", replicate), ("fal", fal)) if not on}
        self._emulators = emulators()
        self._emulations = {e.name: e.emulation(seed) for e in self._emulators}
        self._handles = {e.name: ProviderHandle(e, self._emulations[e.name], self) for e in self._emulators}
        #: endpoint -> the emulator serving it, for those this sandbox serves.
        self._served = {name: e for e in self._emulators if e.name not in left_out for name in e.endpoints}
        self._urls: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # -- providers -------------------------------------------------------------------------------

    def provider(self, name: str) -> ProviderHandle:
        """The handle of emulated provider `name` (`configure`, `reset`, `stats`, `jobs`, `url`)."""
        handle = self._handles.get(name)
        if handle is None:
            emulator(name)  # raises ConfigurationError naming the registered ones
            raise ConfigurationError(f"provider {name!r} was registered after this Sandbox was made", path="sandbox")
        return handle

    @property
    def replicate(self) -> ProviderHandle:
        """The Replicate emulator's handle."""
        return self.provider("replicate")

    @property
    def fal(self) -> ProviderHandle:
        """The fal emulator's handle (its `url` is the queue base URL)."""
        return self.provider("fal")

    @property
    def fal_realtime(self) -> FalRealtime:
        """fal's realtime endpoint (tokens route and WebSocket): `configure`, `reset`, `stats`."""
        return cast(FalEmulation, self._emulations["fal"]).realtime

    # -- URLs ------------------------------------------------------------------------------------

    def url(self, endpoint: str) -> str:
        """The base URL of `endpoint` (see `ENDPOINTS`) while the sandbox runs."""
        if endpoint not in self._served:
            owner = next((e.name for e in self._emulators if endpoint in e.endpoints), None)
            if owner is not None:
                raise RuntimeError(f"this Sandbox was created with {owner}=False")
            allowed = ", ".join(name for e in self._emulators for name in e.endpoints)
            raise ConfigurationError(f"the sandbox serves no endpoint {endpoint!r}; allowed: {allowed}", path="sandbox")
        if endpoint not in self._urls:
            raise RuntimeError("the Sandbox is not running; use it as a context manager or call start()")
        return self._urls[endpoint]

    @property
    def replicate_url(self) -> str:
        """Base URL for `replicate.Client(base_url=...)` (routes under /v1/...)."""
        return self.url("replicate")

    @property
    def fal_url(self) -> str:
        """fal queue base URL: submit is POST {fal_url}/fal-ai/fast-lightning-sdxl."""
        return self.url("fal")

    @property
    def fal_run_url(self) -> str:
        """fal synchronous run base URL: POST {fal_run_url}/fal-ai/fast-lightning-sdxl."""
        return self.url("fal_run")

    @property
    def fal_rest_url(self) -> str:
        """fal REST base URL: GET {fal_rest_url}/v1/models/pricing?endpoint_id=..."""
        return self.url("fal_rest")

    @property
    def fal_realtime_url(self) -> str:
        """fal realtime WebSocket base URL (the run host): ws {fal_realtime_url}/fal-ai/fast-lightning-sdxl/realtime."""
        return "ws" + self.url("fal_run").removeprefix("http")

    @property
    def fal_user_id(self) -> str:
        """The fal user id the sandbox signs webhooks for (`X-Fal-Webhook-User-Id`): `verify_fal(user_id=...)`."""
        return FAL_USER_ID

    @property
    def ca_bundle(self) -> str:
        """Path of a PEM file that trusts this TLS sandbox: its own CA, then certifi's public roots."""
        if not self.tls:
            raise RuntimeError("this Sandbox serves plain HTTP; create it with Sandbox(tls=True)")
        if self._tls_dir is None:
            raise RuntimeError("the Sandbox is not running; use it as a context manager or call start()")
        return str(self._tls_dir / "ca-bundle.pem")

    def env(self) -> dict[str, str]:
        """Environment settings that point this package's generators (built without arguments) and the
        official replicate client at this sandbox (see docs/sandbox.md).

        With `tls=True` they include `SSL_CERT_FILE` (read by httpx, so by both official Python clients and
        ours), `REQUESTS_CA_BUNDLE` (requests) and `NODE_EXTRA_CA_CERTS` (Node clients), all `ca_bundle`.
        """
        settings: dict[str, str] = {}
        if self.tls:
            bundle = self.ca_bundle
            settings.update(SSL_CERT_FILE=bundle, REQUESTS_CA_BUNDLE=bundle, NODE_EXTRA_CA_CERTS=bundle)
        for served in self._served_emulators():
            settings.update(generator_class(served.name).sandbox_environment(self))
            settings.update(served.environment)
        return settings

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind the sockets and start serving; returns once every endpoint accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this Sandbox has already been started")
        if self.tls:
            self._make_certificates()
        try:
            sockets = self._bind()
        except OSError:
            self._remove_certificates()
            raise
        self._thread = threading.Thread(target=self._serve, args=(sockets,), name="lightning-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s) or self._failure is not None:
            self.stop()
            raise RuntimeError(f"the sandbox did not start within {self._start_timeout_s} s") from self._failure
        return self

    def stop(self) -> None:
        """Stop serving: hung and streaming requests are released, jobs canceled, the thread joined."""
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_shutdown)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._urls.clear()
        self._remove_certificates()

    def __enter__(self) -> Sandbox:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Sandbox:
        return self if self._thread is not None else await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"<Sandbox {self._urls or 'stopped'}>"

    # -- internals -------------------------------------------------------------------------------

    def _bind(self) -> dict[str, socket.socket]:
        sockets: dict[str, socket.socket] = {}
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        url_host = (
            "127.0.0.1"
            if self.host in ("0.0.0.0", "")
            else f"[{self.host}]"
            if family == socket.AF_INET6
            else self.host
        )
        try:
            for offset, endpoint in enumerate(self._served):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # Accepted connections inherit this; without it a response's header and body writes wait
                # on the client's delayed ACK (about 40 ms per request on loopback).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.bind((self.host, self._port + offset if self._port else 0))
                sockets[endpoint] = sock
                scheme = "https" if self.tls else "http"
                self._urls[endpoint] = f"{scheme}://{url_host}:{sock.getsockname()[1]}"
        except OSError:
            for sock in sockets.values():
                sock.close()
            self._urls.clear()
            raise
        return sockets

    def _make_certificates(self) -> None:
        """A CA for this sandbox and a server certificate for its host names, written to a private folder."""
        try:
            import trustme
        except ImportError as exc:
            raise RuntimeError('Sandbox(tls=True) needs trustme: pip install "lightning-client[sandbox]"') from exc
        import certifi

        names = ["127.0.0.1", "localhost", "::1"]
        if self.host not in ("0.0.0.0", "", "::", *names):
            names.append(self.host)
        ca = trustme.CA(organization_name="lightning-client sandbox")
        folder = Path(tempfile.mkdtemp(prefix="lightning-sandbox-tls-"))
        ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
        (folder / "ca-bundle.pem").write_bytes(ca.cert_pem.bytes() + Path(certifi.where()).read_bytes())
        self._tls_dir = folder

    def _remove_certificates(self) -> None:
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def _served_emulators(self) -> list[Emulator]:
        return list({id(e): e for e in self._served.values()}.values())

    def _apps(self, sockets: dict[str, socket.socket]) -> dict[int, ASGIApp]:
        by_endpoint: dict[str, ASGIApp] = {}
        for served in self._served_emulators():
            urls = {name: self._urls[name] for name in served.endpoints}
            by_endpoint.update(self._emulations[served.name].apps(urls))
        return {sockets[name].getsockname()[1]: app for name, app in by_endpoint.items()}

    def _cores(self) -> list[ProviderCore]:
        return [emulation.core for emulation in self._emulations.values()]

    def _serve(self, sockets: dict[str, socket.socket]) -> None:
        loop = _new_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(sockets))
        except BaseException as exc:  # noqa: BLE001 - reported to start() and re-raised there
            self._failure = exc
            self._ready.set()
        finally:
            for sock in sockets.values():
                sock.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _main(self, sockets: dict[str, socket.socket]) -> None:
        closing = asyncio.Event()
        loop = asyncio.get_running_loop()
        for core in self._cores():
            core.loop, core.closing = loop, closing
        dispatcher = _Dispatcher(self._apps(sockets))
        config = uvicorn.Config(
            dispatcher,
            lifespan="off",
            access_log=False,
            log_level="warning",
            ws="websockets-sansio",
            timeout_graceful_shutdown=1,
            ssl_certfile=None if self._tls_dir is None else str(self._tls_dir / "server.pem"),
        )
        server = _Server(config, on_started=self._ready.set)
        self._server = server
        try:
            await server.serve(sockets=list(sockets.values()))
        finally:
            for core in self._cores():
                await core.webhooks.aclose()
        if not server.started:
            raise RuntimeError("uvicorn could not start serving the sandbox sockets")

    def _begin_shutdown(self) -> None:
        for core in self._cores():
            if core.closing is not None:
                core.closing.set()
            core.engine.clear()
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the sandbox loop and wait for it (directly when not running or already on it)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or self._thread is threading.current_thread():
            fn()
            return

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


class _Server(uvicorn.Server):
    """A uvicorn server that reports the moment it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class _Dispatcher:
    """The ASGI entry point: routes each request to the app of the socket it arrived on.

    It also puts the connection's transport in the scope (as `lightning.transport`), which the
    connection-reset and hang faults use to drop the connection without an HTTP response.
    """

    def __init__(self, apps: dict[int, ASGIApp]) -> None:
        self._apps = apps

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        server = scope.get("server")
        app = self._apps.get(server[1]) if server else None
        if app is None:
            return
        cycle = getattr(send, "__self__", None)
        scope["lightning.transport"] = getattr(cycle, "transport", None)
        await app(scope, receive, send)


def _new_loop() -> asyncio.AbstractEventLoop:
    if importlib.util.find_spec("uvloop") is not None:
        loop: asyncio.AbstractEventLoop = importlib.import_module("uvloop").new_event_loop()
        return loop
    return asyncio.new_event_loop()
