"""Closed by default: other sites' pages, other hosts and HTTP callers' provider options, over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from tests.serving.conftest import ServeProcess, start_serve


def router_over(sb: Sandbox) -> lc.Router:
    return lc.Router(
        [
            lc.FalGenerator(
                api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
            ),
            lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url),
        ],
        retries=0,
    )


def serving(sb: Sandbox, **settings: object) -> ServerThread:
    app = create_app(router_over(sb), settings=ServerSettings(**settings), routers=[playground_router()])  # type: ignore[arg-type]
    return ServerThread(app)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def keyless(sb: Sandbox) -> Iterator[str]:
    """A server without keys on loopback, as `lightning-client serve --sandbox` runs by default."""
    with serving(sb, allowed_origins=("https://app.example",)) as url:
        yield url


def jobs(sb: Sandbox) -> int:
    return len(sb.fal.jobs()) + len(sb.replicate.jobs())


def test_a_foreign_origin_gets_no_realtime_socket_and_no_job(keyless: str, sb: Sandbox) -> None:
    before = jobs(sb)
    socket_url = "ws" + keyless.removeprefix("http") + "/v1/realtime"
    for origin in ("https://evil.example", "null", f"http://evil.example:{keyless.rsplit(':', 1)[1]}"):
        with pytest.raises(InvalidStatus) as refused, connect(socket_url, origin=origin):  # type: ignore[arg-type]
            pass
        assert refused.value.response.status_code == 403
    assert jobs(sb) == before


@pytest.mark.parametrize("origin", ["same", "https://app.example", None])
def test_the_own_origin_the_allowed_ones_and_programs_get_the_socket(keyless: str, origin: str | None) -> None:
    chosen = keyless if origin == "same" else origin
    with connect("ws" + keyless.removeprefix("http") + "/v1/realtime", origin=chosen) as ws:  # type: ignore[arg-type]
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"


def test_a_keyless_server_answers_only_its_own_host(keyless: str, sb: Sandbox) -> None:
    port = keyless.rsplit(":", 1)[1]
    foreign = httpx.get(f"{keyless}/v1/status", headers={"Host": "attacker.example"}, timeout=10)
    assert foreign.status_code == 400
    assert "attacker.example" in foreign.json()["error"]["message"]
    also = httpx.get(f"{keyless}/v1/status", headers={"Host": f"attacker.example:{port}"}, timeout=10)
    assert also.status_code == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(f"{keyless}/v1/status", headers={"Host": host}, timeout=10).status_code == 200
    before = jobs(sb)
    body = {"prompt": "a fox", "size": "256x256"}
    posted = httpx.post(f"{keyless}/v1/images/generations", json=body, headers={"Host": "attacker.example"}, timeout=30)
    assert posted.status_code == 400 and jobs(sb) == before
    # A page on attacker.example whose name now resolves to 127.0.0.1 (DNS rebinding) opens the socket.
    tcp = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    with pytest.raises(InvalidStatus) as refused, connect(f"ws://attacker.example:{port}/v1/realtime", sock=tcp):
        pass
    assert refused.value.response.status_code == 403
    assert jobs(sb) == before


def test_configured_host_names_are_answered(sb: Sandbox) -> None:
    with serving(sb, allowed_hosts=("images.internal",)) as url:
        assert httpx.get(f"{url}/healthz", headers={"Host": "images.internal:8000"}, timeout=10).status_code == 200
        assert httpx.get(f"{url}/healthz", headers={"Host": "other.internal"}, timeout=10).status_code == 400


def test_links_use_the_public_url_else_the_bind_address_never_the_host_header(sb: Sandbox) -> None:
    body = {"prompt": "a fox", "size": "256x256", "response_format": "url"}
    auth = {"Authorization": "Bearer k", "Host": "attacker.example"}  # a server with keys does not check Host
    with serving(sb, api_keys=("k",)) as url:
        answer = httpx.post(f"{url}/v1/images/generations", json=body, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"][0]["url"].startswith(f"{url}/v1/files/")
    with serving(sb, api_keys=("k",), public_url="https://images.example/base/") as url:
        answer = httpx.post(f"{url}/v1/images/generations", json=body, headers=auth, timeout=30)
        link = answer.json()["data"][0]["url"]
        assert link.startswith("https://images.example/base/v1/files/")
        assert httpx.get(f"{url}/v1/files/{link.rsplit('/', 1)[1]}", timeout=10).status_code == 200


def test_docs_page_is_off_unless_asked_for(keyless: str, sb: Sandbox) -> None:
    assert httpx.get(f"{keyless}/docs", timeout=10).status_code == 404
    assert httpx.get(f"{keyless}/openapi.json", timeout=10).status_code == 200
    with serving(sb, docs=True) as url:
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200


def test_http_callers_set_only_allowed_provider_options(keyless: str, sb: Sandbox) -> None:
    before = len(sb.fal.jobs())
    body = {
        "prompt": "a fox",
        "width": 256,
        "height": 256,
        "providers": ["fal"],
        "provider_options": {"fal": {"num_images": 8, "image_size": {"width": 2048, "height": 2048}}},
    }
    refused = httpx.post(f"{keyless}/v1/generations", json=body, timeout=30)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "provider_options" and "fal.num_images" in error["message"]
    assert len(sb.fal.jobs()) == before


def test_allowed_provider_options_never_override_validated_fields(sb: Sandbox) -> None:
    allowed = ("fal.num_images", "fal.image_size", "fal.expand_prompt")
    with serving(sb, allowed_provider_options=allowed) as url:
        body = {
            "prompt": "a fox",
            "width": 256,
            "height": 256,
            "providers": ["fal"],
            "provider_options": {
                "fal": {"num_images": 8, "image_size": {"width": 2048, "height": 2048}, "expand_prompt": True}
            },
        }
        answer = httpx.post(f"{url}/v1/generations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    result = lc.GenerationResult.model_validate_json(answer.content)
    assert [(image.width, image.height) for image in result.images] == [(256, 256)]
    sent = sb.fal.jobs()[-1]["input"]
    assert (sent["num_images"], sent["image_size"], sent["expand_prompt"]) == (1, {"width": 256, "height": 256}, True)
    ignored = sorted(w.setting for w in result.warnings if w.kind == "ignored")
    assert ignored == ["provider_options.fal.image_size", "provider_options.fal.num_images"]


def test_serve_options_set_hosts_origins_links_and_the_body_limit(serve_process: list[ServeProcess]) -> None:
    running = start_serve(
        "--sandbox",
        "--public-url",
        "https://images.example",
        "--allowed-host",
        "gpu-box",
        "--allowed-origin",
        "https://app.example",
        "--max-body-bytes",
        "2048",
    )
    serve_process.append(running)
    url = running.url
    for host in ("gpu-box:8000", "images.example"):
        assert httpx.get(f"{url}/healthz", headers={"Host": host}, timeout=10).status_code == 200
    assert httpx.get(f"{url}/healthz", headers={"Host": "attacker.example"}, timeout=10).status_code == 400
    body = {"prompt": "a fox", "size": "256x256", "response_format": "url"}
    answer = httpx.post(f"{url}/v1/images/generations", json=body, timeout=60)
    assert answer.json()["data"][0]["url"].startswith("https://images.example/v1/files/")
    too_big = httpx.post(f"{url}/v1/images/generations", json={"prompt": "x" * 3000}, timeout=30)
    assert too_big.status_code == 413
    for origin in ("https://app.example", "https://images.example"):
        with connect("ws" + url.removeprefix("http") + "/v1/realtime", origin=origin) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=30))["type"] == "hello"


def interface_address() -> str | None:
    """An address of this machine other than loopback (None when it has none); nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_keyless_app_answers_nothing_beyond_loopback_unless_allowed(sb: Sandbox) -> None:
    address = interface_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback")
    for allowed, status in ((False, 403), (True, 200)):
        app = create_app(router_over(sb), settings=ServerSettings(allow_unauthenticated=allowed))
        with ServerThread(app, host=address) as url:
            assert httpx.get(f"{url}/v1/status", timeout=10).status_code == status
