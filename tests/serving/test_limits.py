"""Limits before work: body size, prompt length and the file store's bytes, on real servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import lightning_client as lc
from lightning_client.request import MAX_PROMPT_CHARS
from lightning_client.serving.app import create_app
from lightning_client.serving.files import FileStore, FileTooLargeError
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings, server_section
from lightning_client.testing import Sandbox
from tests.serving.conftest import ServeProcess, start_serve

MIB = 1 << 20


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (Linux `VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def post_streamed(url: str, path: str, total: int, *, declare_length: bool) -> bytes:
    """POST `total` bytes of body in 64 KiB chunks over a raw socket; returns what the server answered.

    The server may answer and close before the whole body is sent: sending stops there.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    chunk = b"x" * (64 * 1024)
    framing = f"Content-Length: {total}" if declare_length else "Transfer-Encoding: chunked"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())
        sent = 0
        try:
            while sent < total:
                piece = chunk if declare_length else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(piece)
                sent += len(chunk)
            if not declare_length:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # answered and closed early: what it answered is still to be read
        answer = b""
        try:
            while not answer.endswith(b"}") and (part := sock.recv(65536)):
                answer += part
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServeProcess]:
    server = start_serve("--sandbox", "--api-key", "k")
    yield server
    server.stop()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_64_mib_unauthenticated_body_is_refused_without_holding_it(
    keyed_server: ServeProcess, declare_length: bool
) -> None:
    pid = keyed_server.process.pid
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=10).status_code == 200
    before = peak_rss_bytes(pid)
    answer = post_streamed(keyed_server.url, "/v1/images/generations", 64 * MIB, declare_length=declare_length)
    status = answer.split(b" ", 2)[1] if answer else b""
    assert status in (b"401", b"413"), answer[:300]
    assert b'"error"' in answer
    assert peak_rss_bytes(pid) - before < 40 * MIB
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def small_limits() -> Iterator[tuple[str, Sandbox]]:
    with Sandbox() as sb:
        router = lc.Router([lc.FalGenerator.for_sandbox(sb)], retries=0)
        settings = ServerSettings(max_body_bytes=4096, max_file_bytes=6000)
        with ServerThread(create_app(router, settings=settings)) as url:
            yield url, sb


def test_a_body_over_the_limit_is_a_413_in_the_openai_shape(small_limits: tuple[str, Sandbox]) -> None:
    url, sb = small_limits
    response = httpx.post(f"{url}/v1/images/generations", json={"prompt": "x" * 5000}, timeout=30)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "RequestTooLarge" and "4096 bytes" in error["message"]
    assert sb.fal.jobs() == []


@pytest.mark.parametrize(
    ("route", "small"),
    [("/v1/images/generations", {"size": "256x256"}), ("/v1/generations", {"width": 256, "height": 256})],
)
def test_a_prompt_over_the_maximum_is_a_400_naming_prompt(
    sandbox: Sandbox, route: str, small: dict[str, object]
) -> None:
    router = lc.Router([lc.FalGenerator.for_sandbox(sandbox)], retries=0)
    with ServerThread(create_app(router)) as url:
        response = httpx.post(f"{url}{route}", json={"prompt": "a" * (MAX_PROMPT_CHARS + 1), **small}, timeout=30)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "prompt" and str(MAX_PROMPT_CHARS) in error["message"]
        assert sandbox.fal.jobs() == []
        fits = httpx.post(f"{url}{route}", json={"prompt": "a" * MAX_PROMPT_CHARS, **small}, timeout=30)
        assert fits.status_code == 200, fits.text
    assert len(sandbox.fal.jobs()) == 1


def test_the_file_store_is_bounded_in_bytes() -> None:
    store = FileStore(retention_s=60, max_files=100, max_bytes=10)
    first = store.put(b"12345", "image/png", "png")
    second = store.put(b"6789", "image/png", "png")
    third = store.put(b"abcd", "image/png", "png")  # 13 bytes in all: the oldest goes
    assert store.get(first) is None and store.get(second) is not None and store.get(third) is not None
    assert store.bytes == 8
    with pytest.raises(FileTooLargeError, match="b64_json"):
        store.put(b"x" * 11, "image/png", "png")


def test_url_images_past_the_byte_bound_drop_the_oldest(sandbox: Sandbox) -> None:
    body = {"prompt": "a fox", "size": "256x256", "seed": 3, "response_format": "url"}
    router = lc.Router([lc.FalGenerator.for_sandbox(sandbox)], retries=0)
    with ServerThread(create_app(router)) as url:
        one = len(
            httpx.get(
                httpx.post(f"{url}/v1/images/generations", json=body, timeout=30).json()["data"][0]["url"]
            ).content
        )
    settings = ServerSettings(max_file_bytes=2 * one + one // 2)  # room for two of these images
    with ServerThread(
        create_app(lc.Router([lc.FalGenerator.for_sandbox(sandbox)], retries=0), settings=settings)
    ) as url:
        links = [
            httpx.post(f"{url}/v1/images/generations", json=body, timeout=30).json()["data"][0]["url"] for _ in range(3)
        ]
        assert [httpx.get(link, timeout=10).status_code for link in links] == [404, 200, 200]


def test_the_server_table_sets_the_limits(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        '[[generators]]\nkind = "fal"\n\n[server]\nmax_body_bytes = 2048\nmax_file_bytes = 1000000\n'
        'public_url = "https://images.example"\nallowed_hosts = ["images.example"]\n'
        'allowed_origins = ["https://app.example"]\nallowed_provider_options = ["fal.expand_prompt"]\n'
    )
    section = server_section(config)
    assert (section.max_body_bytes, section.max_file_bytes, section.public_url) == (
        2048,
        1000000,
        "https://images.example",
    )
    assert section.allowed_provider_options == ["fal.expand_prompt"]


def test_serve_refuses_a_bad_public_url_naming_it(serve_process: list[ServeProcess]) -> None:
    with pytest.raises(AssertionError, match="public_url"):
        serve_process.append(start_serve("--sandbox", "--public-url", "ftp://nowhere", timeout_s=60))
