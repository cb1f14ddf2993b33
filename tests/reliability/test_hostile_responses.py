"""Hostile responses the sandbox cannot produce, from a small server of our own on 127.0.0.1.

It speaks just enough of Replicate's predictions API and fal's queue API for the generators to
reach the answer under test. Every case must end in a clear `LightningError` (no crash, no other
exception type), within the request's deadline, and leave the generator usable.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

import lightning_client as lc
from lightning_client.generator import BaseGenerator
from lightning_client.images import MAX_IMAGE_BYTES

APP = "fal-ai/fast-lightning-sdxl"
#: Longer than a read's in-place retries can take (4 retries from 0.1 s, doubling, jittered: at most
#: about 2.3 s), so a damaged answer fails as itself and not as the deadline on a loaded machine.
DEADLINE_S = 4.0
#: How far past the deadline a failure may arrive (the remote cancel is bounded separately).
SLACK_S = 1.0


def _png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG that declares side x side pixels (10 gigapixels): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 16, 9)  # a few rows; the rest would inflate from nothing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


PNG = _png()


@dataclass
class Hostile:
    """What the server answers; `case` picks the misbehaviour."""

    url: str = ""
    case: str = "healthy"
    image_url: str | None = None
    redirect_to: str = ""
    hits: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    state: Hostile

    def log_message(self, format: str, *args: object) -> None:
        return

    # -- helpers ---------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, body: object, status: int = 200) -> None:
        self._send(status, json.dumps(body).encode())

    def _image_url(self) -> str:
        return self.state.image_url or f"{self.state.url}/img/out.png"

    def _prediction(self, status: str) -> dict[str, object]:
        base = self.state.url
        return {
            "id": "p1",
            "status": status,
            "input": {},
            "output": [self._image_url()] if status == "succeeded" else None,
            "logs": "Using seed: 1\n",
            "metrics": {"predict_time": 0.1} if status == "succeeded" else {},
            "created_at": "2026-01-01T00:00:00Z",
            "urls": {"get": f"{base}/v1/predictions/p1", "cancel": f"{base}/v1/predictions/p1/cancel"},
        }

    def _hang(self) -> None:
        """Hold the request open (the client gives up first)."""
        time.sleep(DEADLINE_S + 3)

    # -- routes ----------------------------------------------------------------------------------

    def do_POST(self) -> None:
        self.state.hits.append(f"POST {self.path}")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        case = self.state.case
        if self.path.endswith("/cancel"):
            self.state.cancels.append(self.path)
            self._json({**self._prediction("canceled"), "output": None})
        elif case == "api_redirect":
            self._send(307, b"", Location=f"{self.state.redirect_to}{self.path}")
        elif case == "json_html":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif case == "json_list":
            self._json([{"id": "p1"}], 201)
        elif case == "json_oversized":
            self._send(201, b'{"id": "p1", "logs": "' + b"x" * (8 * 1024 * 1024) + b"[")
        elif self.path == "/v1/predictions":
            starting = case in ("json_malformed", "status_hang")
            self._json(self._prediction("starting" if starting else "succeeded"), 201)
        else:  # fal submit
            root = f"{self.state.url}/{APP}/requests/r1"
            self._json(
                {
                    "request_id": "r1",
                    "status": "IN_QUEUE",
                    "status_url": f"{root}/status",
                    "response_url": root,
                    "cancel_url": f"{root}/cancel",
                }
            )

    def do_PUT(self) -> None:
        self.state.hits.append(f"PUT {self.path}")
        self.state.cancels.append(self.path)
        self._json({"status": "CANCELLATION_REQUESTED"}, 202)

    def do_GET(self) -> None:
        self.state.hits.append(f"GET {self.path}")
        case = self.state.case
        path = self.path.split("?", 1)[0]
        if path.startswith("/img/"):
            self._image()
        elif path == "/v1/predictions":
            self._json({"results": [], "next": None})
        elif path.startswith("/v1/predictions/"):
            if case == "status_hang":
                self._hang()
            elif case == "json_malformed":
                self._send(200, b'{"id": "p1", "status": "succ')
            else:
                self._json(self._prediction("succeeded"))
        elif path.endswith("/status/stream"):
            if case == "status_hang":
                self._hang()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'data: {"status": "COMPLETED", "metrics": {"inference_time": 0.1}}\n\n')
        elif path.endswith("/status"):
            self._json({"status": "COMPLETED"})
        elif path.endswith("/requests/r1"):
            if case == "json_malformed":
                self._send(200, b'{"images": [{"url": ')
            else:
                self._json({"images": [{"url": self._image_url(), "width": 64, "height": 64}], "seed": 1})
        else:
            self._send(404, b'{"detail": "not found"}')

    def _image(self) -> None:
        case = self.state.case
        if case == "image_redirect":
            self._send(302, b"", "text/plain", Location=f"{self.state.redirect_to}/img/out.png")
        elif case == "image_html":
            self._send(200, b"<html><body>Access denied</body></html>", "text/html")
        elif case == "image_mislabelled":
            self._send(200, PNG, "image/jpeg")
        elif case == "image_truncated":
            self._send(200, PNG[: len(PNG) // 2], "image/png")
        elif case == "image_bomb":
            self._send(200, _bomb_png(), "image/png")
        elif case == "image_oversized_declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(MAX_IMAGE_BYTES + 1))
            self.end_headers()
            self._stream(MAX_IMAGE_BYTES + 1)
        elif case == "image_oversized_streamed":  # no length: the body ends when the connection closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self._stream(MAX_IMAGE_BYTES + 1024 * 1024)
        elif case == "image_trickle":  # one byte at a time, forever
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            try:
                for byte in PNG:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        else:
            self._send(200, PNG, "image/png")

    def _stream(self, size: int) -> None:
        chunk = PNG + b"\0" * (1024 * 1024 - len(PNG))
        try:
            sent = 0
            while sent < size:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            return


def _serve(state: Hostile) -> Iterator[Hostile]:
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    yield from _serve(Hostile())


@pytest.fixture
def elsewhere() -> Iterator[Hostile]:
    """Another host (by netloc) that must never be contacted with our credentials."""
    yield from _serve(Hostile())


def _generator(provider: str, url: str) -> BaseGenerator:
    if provider == "replicate":
        return lc.ReplicateGenerator(api_key="r8_hostile_token", base_url=url, cancel_timeout_s=1.0)
    return lc.FalGenerator(api_key="hostile:key", base_url=url, rest_url=url, cancel_timeout_s=1.0)


REQUEST = lc.GenerationRequest(prompt="a red fox", width=256, height=256, seed=1, timeout_s=DEADLINE_S)
#: case -> (error class, words the message must contain)
CASES: dict[str, tuple[type[lc.LightningError], str]] = {
    "image_html": (lc.ProviderResponseError, "not a PNG, JPEG or WebP"),
    "image_mislabelled": (lc.ProviderResponseError, "declared as image/jpeg"),
    "image_truncated": (lc.ProviderResponseError, "cannot be decoded"),
    "image_bomb": (lc.ProviderResponseError, "pixel"),
    "image_oversized_declared": (lc.ProviderResponseError, "byte limit"),
    "image_oversized_streamed": (lc.ProviderResponseError, "byte limit"),
    "image_trickle": (lc.GenerationTimeoutError, "timeout_s"),
    "json_malformed": (lc.ProviderResponseError, "not valid JSON"),
    "status_hang": (lc.GenerationTimeoutError, "timeout_s"),
}


@pytest.mark.parametrize("provider", ["replicate", "fal"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_hostile_answer_gives_a_clear_error_in_time(hostile: Hostile, provider: str, case: str) -> None:
    error_class, words = CASES[case]
    hostile.case = case
    generator = _generator(provider, hostile.url)
    try:
        started = time.monotonic()
        with pytest.raises(lc.LightningError) as caught:
            await generator.agenerate(REQUEST)
        elapsed = time.monotonic() - started
        assert type(caught.value) is error_class, repr(caught.value)
        assert words in str(caught.value)
        assert caught.value.provider == provider
        assert elapsed < DEADLINE_S + SLACK_S
        # Still usable: the next, healthy answer is served.
        hostile.case = "healthy"
        result = await generator.agenerate(REQUEST)
        assert result.images[0].width == 64
    finally:
        await generator.aclose()


@pytest.mark.parametrize("provider", ["replicate", "fal"])
async def test_a_job_stuck_at_the_deadline_is_cancelled(hostile: Hostile, provider: str) -> None:
    hostile.case = "status_hang"
    generator = _generator(provider, hostile.url)
    try:
        with pytest.raises(lc.GenerationTimeoutError):
            await generator.agenerate(REQUEST)
    finally:
        await generator.aclose()
    assert hostile.cancels, hostile.hits


@pytest.mark.parametrize("case", ["json_html", "json_list", "json_oversized"])
@pytest.mark.parametrize("provider", ["replicate", "fal"])
async def test_a_create_answered_with_garbage_is_not_resent(hostile: Hostile, provider: str, case: str) -> None:
    hostile.case = case
    generator = _generator(provider, hostile.url)
    try:
        with pytest.raises(lc.ProviderResponseError) as caught:
            await generator.agenerate(REQUEST)
    finally:
        await generator.aclose()
    error = caught.value
    # Either the job id could still be read (and the job was cancelled), or its outcome is reported unknown.
    assert (error.request_id is not None and hostile.cancels) or (error.outcome_unknown and error.request_id is None)
    creates = [hit for hit in hostile.hits if hit.startswith("POST") and not hit.endswith("/cancel")]
    assert len(creates) == 1


@pytest.mark.parametrize("provider", ["replicate", "fal"])
async def test_redirects_to_other_hosts_are_not_followed(hostile: Hostile, elsewhere: Hostile, provider: str) -> None:
    hostile.redirect_to = elsewhere.url.replace("127.0.0.1", "localhost")
    generator = _generator(provider, hostile.url)
    try:
        hostile.case = "image_redirect"
        with pytest.raises(lc.ProviderResponseError, match="redirected to another host"):
            await generator.agenerate(REQUEST)
        hostile.case = "api_redirect"
        with pytest.raises(lc.ProviderResponseError) as caught:
            await generator.agenerate(REQUEST)
        assert caught.value.status_code == 307
    finally:
        await generator.aclose()
    assert elsewhere.hits == []  # neither the token nor the request left for the other host


@pytest.mark.parametrize("provider", ["replicate", "fal"])
@pytest.mark.parametrize(
    "image_url",
    ["http://images.example.com/out.png", "ftp://127.0.0.1/out.png", "file:///etc/passwd", "javascript:alert(1)"],
)
async def test_image_urls_outside_https_are_refused(hostile: Hostile, provider: str, image_url: str) -> None:
    hostile.image_url = image_url
    generator = _generator(provider, hostile.url)
    started = time.monotonic()
    try:
        with pytest.raises(lc.ProviderResponseError, match="only https URLs"):
            await generator.agenerate(REQUEST)
    finally:
        await generator.aclose()
    assert time.monotonic() - started < DEADLINE_S
