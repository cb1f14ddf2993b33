"""Shared fixtures: a loopback HTTP file server for image-handling tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
