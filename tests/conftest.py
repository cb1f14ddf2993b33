"""Shared fixtures: a loopback HTTP file server for image-handling tests, a webhook receiver, and a loader
for the repository's scripts that are not in a package."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Third-party DeprecationWarnings that pyproject's filterwarnings ignores by module stay ignored under
    `-W error::DeprecationWarning` too (a command-line filter outranks the ini list, a test's mark outranks both)."""
    ignored = [f for f in config.getini("filterwarnings") if f.startswith("ignore::DeprecationWarning:")]
    for item in items:
        for entry in ignored:
            item.add_marker(pytest.mark.filterwarnings(entry))


@pytest.fixture
def script_module() -> Callable[[str], ModuleType]:
    """Loads a file of the repository that is in no package (a benchmark script, another test file) by its
    path from the repository root."""

    def load(relative: str) -> ModuleType:
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FileServer:
    """A real HTTP server on 127.0.0.1 whose routes tests set directly."""

    url: str
    routes: dict[str, Route]
    hits: list[str]


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    routes: dict[str, Route] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            route = routes.get(self.path, Route(status=404, body=b"not found"))
            self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key, value)
            if "Content-Length" not in route.headers:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(url=f"http://127.0.0.1:{server.server_address[1]}", routes=routes, hits=hits)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Delivery:
    """One POST a webhook receiver got: path, headers (names lower-cased), raw body, arrival time."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records POSTs; `statuses` are answered first, then 200."""

    url: str
    deliveries: list[Delivery]
    statuses: list[int]
    arrived: threading.Condition

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The deliveries once there are `count` of them (fails the test after `timeout` seconds)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} webhook deliveries arrived, expected {count}")
            return list(self.deliveries)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    deliveries: list[Delivery] = []
    statuses: list[int] = []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with arrived:
                status = statuses.pop(0) if statuses else 200
                deliveries.append(
                    Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
                arrived.notify_all()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hook", deliveries, statuses, arrived)
    finally:
        server.shutdown()
        server.server_close()
