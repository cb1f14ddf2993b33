"""`lightning-client serve` as a user runs it: a real process, the official OpenAI SDK, SIGTERM."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.serving.conftest import ServeProcess, start_serve


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[ServeProcess]:
    server = start_serve("--sandbox", "--api-key", "k")
    yield server
    server.stop()


def test_openai_sdk_generates_a_512_png_with_the_seed(sandbox_server: ServeProcess) -> None:
    client = openai.OpenAI(base_url=f"{sandbox_server.url}/v1", api_key="k", max_retries=0)
    response = client.images.generate(
        model="sdxl-lightning", prompt="a fox", size="512x512", extra_body={"steps": 2, "seed": 5}
    )
    assert response.data is not None and len(response.data) == 1
    png = base64.b64decode(response.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (512, 512)
    extra = response.model_extra or {}
    assert extra["seed"] == 5
    assert extra["provider"] in ("replicate", "fal")
    assert extra["timings"]["total_s"] > 0


def test_a_wrong_key_is_an_authentication_error(sandbox_server: ServeProcess) -> None:
    client = openai.OpenAI(base_url=f"{sandbox_server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(model="sdxl-lightning", prompt="a fox")


def test_steps_3_is_a_4xx_naming_steps(sandbox_server: ServeProcess) -> None:
    client = openai.OpenAI(base_url=f"{sandbox_server.url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="sdxl-lightning", prompt="a fox", extra_body={"steps": 3})
    assert 400 <= caught.value.status_code < 500
    assert "steps" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "steps"


def test_without_a_key_it_refuses_to_listen_beyond_loopback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lightning_client", "serve", "--sandbox", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "LIGHTNING_CLIENT_API_KEYS"},
    )
    assert done.returncode == 2
    assert "--api-key" in done.stderr and "--allow-unauthenticated" in done.stderr
