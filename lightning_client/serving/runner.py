"""Running the app on uvicorn: the startup line and the SIGTERM drain.

On SIGTERM (or Ctrl-C) the server stops accepting connections and the app drains: queued and
new requests are answered 503, requests in flight get `grace_s` to finish, then their
generations are cancelled (remote jobs cancelled, outcome and cost recorded) and they are
answered 503 too. The app's shutdown then closes the generator and flushes and closes the
ledger, all before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from lightning_client._log import get_logger
from lightning_client.serving.app import drain

__all__ = ["ServerThread", "run_server"]


class _Server(uvicorn.Server):
    """uvicorn, draining the app (`drain`) once it stops accepting, before its own shutdown."""

    def __init__(self, config: uvicorn.Config, app: Any, *, grace_s: float, announce: bool) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self._announce:
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                print(f"lightning-client serving on http://{shown}:{port}", flush=True)
                return

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting while the app drains
        draining = asyncio.ensure_future(drain(self._app, self._grace_s))
        while not draining.done():  # a second Ctrl-C (force exit) cuts the drain short
            if self.force_exit:
                draining.cancel()
            await asyncio.wait({draining}, timeout=0.1)
        failed = None if draining.cancelled() else draining.exception()
        if failed is not None:
            get_logger("lightning_client.serving").error("draining failed", exc_info=failed)
        await super().shutdown(sockets)


def run_server(app: Any, *, host: str, port: int, grace_s: float, log_level: str = "info") -> None:
    """Serve `app` until SIGTERM/SIGINT; prints `lightning-client serving on URL` once listening."""
    server_log = get_logger("lightning_client.serving")
    if not any(isinstance(h, logging.StreamHandler) for h in server_log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        server_log.addHandler(handler)
        server_log.setLevel(logging.INFO)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=grace_s,  # type: ignore[arg-type]  # used as a float by asyncio.wait_for
        log_level=log_level,
        lifespan="on",
        access_log=False,
    )
    _Server(config, app, grace_s=grace_s, announce=True).run()
    sys.stdout.flush()


class ServerThread:
    """Serve an app from a background thread on loopback (tests, benchmarks, notebooks).

    ```python
    with ServerThread(create_app(generator)) as url:
        httpx.get(f"{url}/healthz")
    ```
    `grace_s` bounds how long in-flight requests may finish when it stops.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, grace_s: float = 5.0) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            timeout_graceful_shutdown=grace_s,  # type: ignore[arg-type]  # used as a float by asyncio.wait_for
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        self._server = _Server(config, app, grace_s=grace_s, announce=False)
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> str:
        """Start serving; returns the base URL once listening."""
        self._thread = threading.Thread(target=self._server.run, name="lightning-client-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (within the grace), shut the app down."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join()
        self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
