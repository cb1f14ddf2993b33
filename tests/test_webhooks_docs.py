"""The FastAPI receiver in docs/webhooks.md, served on loopback, receiving the sandbox's deliveries."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lightning_client import webhooks
from lightning_client.testing.sandbox import Sandbox

pytest.importorskip("fastapi")  # the example needs the serve extra

DOC = Path(__file__).parents[1] / "docs" / "webhooks.md"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
AUTH = {"Authorization": "Bearer r8_test"}


def _example() -> str:
    section = DOC.read_text().split("## A FastAPI receiver", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


@pytest.fixture
def receiver(
    lightning_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, replicate_sandbox: Any, fal_sandbox: Any
) -> Iterator[tuple[str, dict[str, Any]]]:
    secret = httpx.get(f"{lightning_sandbox.replicate_url}/v1/webhooks/default/secret", headers=AUTH).json()["key"]
    monkeypatch.setenv("REPLICATE_WEBHOOK_SECRET", secret)
    monkeypatch.setenv("FAL_USER_ID", lightning_sandbox.fal_user_id)
    namespace: dict[str, Any] = {}
    exec(compile(_example(), str(DOC), "exec"), namespace)
    namespace["FAL_KEYS"] = webhooks.JwksCache(f"{lightning_sandbox.fal_rest_url}/.well-known/jwks.json")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(namespace["app"], log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", namespace
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _until(predicate: Any) -> None:
    deadline = time.monotonic() + 10
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_docs_receiver_accepts_sandbox_deliveries_and_refuses_tampering(
    lightning_sandbox: Sandbox, receiver: tuple[str, dict[str, Any]]
) -> None:
    url, namespace = receiver
    seen = namespace["guard"].store  # the ids the receiver has handled
    body = {"version": VERSION, "input": {"prompt": "x", "width": 256, "height": 256}}
    hook = {"webhook": f"{url}/hooks/replicate", "webhook_events_filter": ["completed"]}
    httpx.post(f"{lightning_sandbox.replicate_url}/v1/predictions", json={**body, **hook}, headers=AUTH)
    httpx.post(
        f"{lightning_sandbox.fal_url}/fal-ai/fast-lightning-sdxl",
        params={"fal_webhook": f"{url}/hooks/fal"},
        json={"prompt": "x"},
        headers={"Authorization": "Key id:secret"},
    )

    def delivered() -> tuple[int, int]:
        return (
            lightning_sandbox.replicate.stats()["webhooks"]["delivered"],
            lightning_sandbox.fal.stats()["webhooks"]["delivered"],
        )

    # The receiver records a delivery before it answers; the sandbox counts it once the answer is in.
    _until(lambda: len(seen) == 2 and delivered() == (1, 1))
    assert len(seen) == 2
    assert delivered() == (1, 1)
    forged = httpx.post(
        f"{url}/hooks/replicate",
        content=b'{"id": "x"}',
        headers={"webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"},
    )
    assert forged.status_code == 400 and "signature" in forged.json()["detail"]


def test_docs_receiver_handles_a_replayed_delivery_once(
    lightning_sandbox: Sandbox, receiver: tuple[str, dict[str, Any]], webhook_receiver: Any
) -> None:
    url, namespace = receiver
    body = {"version": VERSION, "input": {"prompt": "x", "width": 256, "height": 256}}
    hook = {"webhook": webhook_receiver.url, "webhook_events_filter": ["completed"]}
    httpx.post(f"{lightning_sandbox.replicate_url}/v1/predictions", json={**body, **hook}, headers=AUTH)
    (captured,) = webhook_receiver.wait_for(1)
    for _ in range(3):  # the original and two replays inside the window: all verify, one is handled
        answer = httpx.post(f"{url}/hooks/replicate", content=captured.body, headers=captured.headers)
        assert answer.status_code == 200
    assert len(namespace["guard"].store) == 1


def test_docs_receiver_forged_fal_deliveries_fetch_the_keys_once(
    lightning_sandbox: Sandbox, receiver: tuple[str, dict[str, Any]]
) -> None:
    url, _ = receiver
    for n in range(50):
        forged = httpx.post(
            f"{url}/hooks/fal",
            content=b'{"request_id": "x", "status": "OK", "payload": {}}',
            headers={
                "x-fal-webhook-request-id": f"req-{n}",
                "x-fal-webhook-user-id": lightning_sandbox.fal_user_id,
                "x-fal-webhook-timestamp": str(int(time.time())),
                "x-fal-webhook-signature": "ab" * 64,
            },
        )
        assert forged.status_code == 400 and "none of the JWKS keys" in forged.json()["detail"]
    assert lightning_sandbox.fal.stats()["requests"]["jwks"] == 1
