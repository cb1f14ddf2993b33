"""The playground page and its realtime socket, served over real HTTP and WebSocket on loopback."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

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


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Sandbox]]:
    with Sandbox() as sb:
        app = create_app(router_over(sb), settings=ServerSettings(api_keys=("k",)), routers=[playground_router()])
        with ServerThread(app) as url:
            yield url, sb


def ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/v1/realtime?api_key=k"


def receive(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message["type"] == kind:
            return message
        assert message["type"] != "error", message


def test_page_and_module_are_served_without_external_assets(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    page = httpx.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="playground.js">' in page.text
    script = httpx.get(f"{url}/playground.js", timeout=10)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for text in (page.text, script.text):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text) and "import " not in text.split("\n", 1)[0]


def test_socket_answers_sends_with_frames(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    with connect(ws_url(url)) as ws:
        hello = receive(ws, "hello")
        assert hello["providers"] == ["auto", "fal", "replicate"] and hello["steps"] == [1, 2, 4, 8]
        ws.send(json.dumps({"type": "send", "prompt": "a red fox", "steps": 2, "seed": 9, "provider": "auto"}))
        frame = receive(ws, "frame")
        assert (frame["provider"], frame["transport"], frame["seed"], frame["steps"]) == ("fal", "websocket", 9, 2)
        assert frame["latency_ms"] > 0 and frame["cost_usd"] > 0 and frame["prompt"] == "a red fox"
        header, data = frame["image"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (512, 512)
        assert frame["stats"]["served"] == 1 and any(row["provider"] == "fal" for row in frame["ledger"])
        ws.send(json.dumps({"type": "send", "prompt": "a red fox", "steps": 4, "seed": 9, "provider": "replicate"}))
        moved = receive(ws, "frame")
        assert moved["provider"] == "replicate" and moved["emulated"] and moved["send_id"] == 1


def test_bad_input_is_an_error_frame_and_the_socket_goes_on(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    with connect(ws_url(url)) as ws:
        receive(ws, "hello")
        ws.send(json.dumps({"type": "send", "prompt": "x", "steps": 3}))
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and error["error"] == "InvalidRequestError" and error["field"] == "steps"
        ws.send(json.dumps({"type": "send", "prompt": "x", "provider": "elsewhere"}))
        error = json.loads(ws.recv(timeout=30))
        assert error["field"] == "provider" and "auto, fal, replicate" in error["message"]
        ws.send(json.dumps({"type": "send", "prompt": "fine now", "steps": 1}))
        assert receive(ws, "frame")["prompt"] == "fine now"


def test_socket_needs_the_api_key(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url(url).replace("api_key=k", "api_key=wrong")).close()
    assert caught.value.response.status_code == 403
    with connect(ws_url(url).split("?")[0], additional_headers={"Authorization": "Bearer k"}) as ws:
        assert receive(ws, "hello")["type"] == "hello"


def test_serve_sandbox_serves_the_playground_offline(serve_process: list[ServeProcess]) -> None:
    running = start_serve("--sandbox")
    serve_process.append(running)
    assert "playground.js" in httpx.get(f"{running.url}/", timeout=10).text
    with connect("ws" + running.url.removeprefix("http") + "/v1/realtime") as ws:
        assert "fal" in receive(ws, "hello")["providers"]
        ws.send(json.dumps({"type": "send", "prompt": "offline", "steps": 1, "provider": "fal"}))
        frame = receive(ws, "frame")
    assert frame["provider"] == "fal" and frame["transport"] == "websocket"
