"""Malformed input at every door: HTTP bodies, realtime frames, plugins and the Ray app builder's arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

import lightning_client as lc
from lightning_client.registry import ENTRY_POINT_GROUP
from lightning_client.request import MAX_IMAGES
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import refuse_keyless_exposure
from lightning_client.testing import Sandbox

ROOT = Path(__file__).resolve().parents[2]
IMAGES, NATIVE = "/v1/images/generations", "/v1/generations"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Sandbox]]:
    with Sandbox() as sb:
        router = lc.Router([lc.FalGenerator.for_sandbox(sb)], retries=0)
        with ServerThread(create_app(router, routers=[playground_router()])) as url:
            yield url, sb


def post(url: str, route: str, body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{url}{route}", content=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "InvalidRequestError"
    return error


def test_a_size_with_non_ascii_digits_is_a_400_naming_size(served: tuple[str, Sandbox]) -> None:
    url, sb = served
    error = post(url, IMAGES, json.dumps({"prompt": "a fox", "size": "²x²"}).encode())
    assert error["param"] == "size" and "²x²" in error["message"]
    assert sb.fal.jobs() == []


def test_n_has_one_limit_in_schema_model_and_answers(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()["components"]["schemas"]["ImagesRequest"]
    assert schema["properties"]["n"]["maximum"] == MAX_IMAGES == 8
    assert lc.GenerationRequest.model_json_schema()["properties"]["num_images"]["maximum"] == MAX_IMAGES
    for n in (MAX_IMAGES + 1, 10):
        error = post(url, IMAGES, json.dumps({"prompt": "a fox", "n": n}).encode())
        assert error["param"] == "n" and str(MAX_IMAGES) in error["message"]
    assert post(url, NATIVE, json.dumps({"prompt": "a fox", "num_images": 9}).encode())["param"] == "num_images"
    docs = (ROOT / "docs" / "serving.md").read_text()
    assert f"`n` (1-{MAX_IMAGES} here)" in docs


@pytest.mark.parametrize("route", [IMAGES, NATIVE])
def test_broken_json_names_line_and_column_and_no_field(served: tuple[str, Sandbox], route: str) -> None:
    url, _ = served
    error = post(url, route, b'{"prompt": "a fox",\n  "n": 2,,}')
    assert error["message"].startswith("invalid JSON at line 2, column 10: ")
    assert error["param"] is None


@pytest.mark.parametrize("route", [IMAGES, NATIVE])
@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"prompt=a+fox", "application/x-www-form-urlencoded", "Content-Type: application/json"),
        (b'{"prompt": "a fox"}', "text/plain", "Content-Type: application/json"),
        (b'{"prompt": "a fox"}', None, "Content-Type: application/json"),
        (b"[1, 2]", "application/json", "must be a JSON object, not an array"),
        (b"null", "application/json", "must be a JSON object, not null"),
        (b"", "application/json", "no body"),
        (b"\xff\xfe\x00\x01\x02", "application/json", "not UTF-8 JSON"),
        (b"\x89PNG\r\n\x1a\n\x00", "application/json", "JSON"),
    ],
)
def test_every_malformed_body_is_a_400_saying_what_is_wrong(
    served: tuple[str, Sandbox], route: str, body: bytes, content_type: str | None, says: str
) -> None:
    url, sb = served
    error = post(url, route, body, content_type)
    assert says in error["message"] and error["param"] is None
    assert sb.fal.jobs() == []


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        (IMAGES, {"prompt": 5}, "prompt"),
        (IMAGES, {"prompt": "a", "colour": "red"}, "colour"),
        (NATIVE, {"prompt": 5}, "prompt"),
        (NATIVE, {"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_field_is_named_in_message_and_param(
    served: tuple[str, Sandbox], route: str, body: dict[str, Any], param: str
) -> None:
    url, _ = served
    error = post(url, route, json.dumps(body).encode())
    assert error["param"] == param and param in error["message"]


def test_the_openai_sdk_sees_a_bad_request_for_a_bad_size(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a fox", size="²x²")  # type: ignore[arg-type]
    assert caught.value.body["param"] == "size"  # type: ignore[index]


def test_bad_realtime_frames_get_an_error_frame_and_the_socket_stays_open(served: tuple[str, Sandbox]) -> None:
    url, _ = served
    with connect("ws" + url.removeprefix("http") + "/v1/realtime") as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"
        for frame in ("not json {", b"\x00\x01binary"):
            ws.send(frame)
            error = json.loads(ws.recv(timeout=30))
            assert error["type"] == "error" and error["error"] == "InvalidRequestError"
            assert ("JSON" in error["message"]) if isinstance(frame, str) else ("binary" in error["message"])
        ws.send(json.dumps({"type": "send", "prompt": "still here", "steps": 1, "width": 256, "height": 256}))
        while (message := json.loads(ws.recv(timeout=30)))["type"] != "frame":
            assert message["type"] != "error", message
        assert message["prompt"] == "still here"


BROKEN_PLUGIN = "raise RuntimeError('the plugin needs a licence server')\n"


def test_a_plugin_that_fails_to_import_is_a_configuration_error_naming_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "broken_lightning-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "broken_lightning.py").write_text(BROKEN_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-lightning\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = broken_lightning:BrokenGenerator\n")
    config = tmp_path / "lightning.toml"
    config.write_text('[[generators]]\nkind = "broken"\n')
    code = textwrap.dedent(
        f"""
        import lightning_client as lc
        from lightning_client.registry import generator_class
        for attempt in (lambda: generator_class("broken"), lambda: lc.load_config({str(config)!r})):
            try:
                attempt()
            except lc.ConfigurationError as exc:
                print("ConfigurationError:", exc.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        assert "broken = broken_lightning:BrokenGenerator" in line and "licence server" in line


def test_keyless_exposure_is_refused_by_one_rule() -> None:
    refuse_keyless_exposure("127.0.0.1", keys=False, allowed=False, keys_hint="k", allow_hint="a")
    refuse_keyless_exposure("0.0.0.0", keys=True, allowed=False, keys_hint="k", allow_hint="a")
    refuse_keyless_exposure("0.0.0.0", keys=False, allowed=True, keys_hint="k", allow_hint="a")
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"):
        refuse_keyless_exposure("0.0.0.0", keys=False, allowed=False, keys_hint="k", allow_hint="a")


def test_the_ray_app_builder_refuses_non_loopback_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.serve", reason="the ray extra is part of the dev environment")
    from lightning_client.serving.ray import app

    monkeypatch.delenv("LIGHTNING_CLIENT_API_KEYS", raising=False)
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without an API key.*api_key=KEY"):
        app({"host": "0.0.0.0", "local_model": "/nowhere"})
    with pytest.raises(ValueError, match="unauthenticated"):
        app({"host": "0.0.0.0", "unauthenticated": "maybe"})
