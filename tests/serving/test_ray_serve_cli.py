"""`lightning-client serve --ray` as a user runs it: its own Ray cluster, 2 CPU replicas, the OpenAI SDK."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is part of the dev environment")
pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import httpx
import openai
import psutil
import torch

import lightning_client as lc
from lightning_client.providers.local import LocalGenerator
from lightning_client.testing.tiny import build_tiny_lightning


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 150.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve --ray exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"serve --ray never became ready: {log.read_text()[-3000:]}")


def reference_images(folder: Path, seeds: range) -> list[bytes]:
    """The same requests to an in-process LocalGenerator on the same folder (one torch thread, as a replica)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = LocalGenerator(base_model=str(folder / "base"), lightning_repo=str(folder / "lightning"), device="cpu")
    try:

        async def run() -> list[bytes]:
            results = [await generator.agenerate(request(seed)) for seed in seeds]
            return [r.images[0].data for r in results]

        return asyncio.run(run())
    finally:
        generator.close()
        torch.set_num_threads(threads)


def ledger_records(path: Path, count: int) -> list[lc.Attempt]:
    """The attempts sent (not skipped) in the ledger file, once it holds `count` (written in the background)."""
    for _ in range(100):
        with lc.Ledger(path) as ledger:
            done = [a for a in ledger.records() if a.outcome not in (None, "skipped")]
        if len(done) >= count:
            return done
        time.sleep(0.1)
    return done


def request(seed: int) -> lc.GenerationRequest:
    return lc.GenerationRequest(prompt="a red fox", steps=2, width=64, height=64, seed=seed)


def test_serve_ray_spreads_openai_calls_over_two_replicas_and_stops_its_cluster(tmp_path: Path) -> None:
    tiny = build_tiny_lightning(tmp_path / "tiny")
    port = free_port()
    log = tmp_path / "serve.log"
    ledger = tmp_path / "ledger.sqlite"
    command = ["serve", "--ray", "--local-model", str(tiny.root), "--replicas", "2", "--device", "cpu"]
    command += ["--sandbox", "--ledger", str(ledger)]  # a router: the pool, then the sandbox's providers
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lightning_client", *command, "--port", str(port), "--api-key", "k"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        )
    cluster: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log)
        cluster = psutil.Process(process.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in cluster), "the command started its own Ray cluster"
        page = httpx.get(f"{url}/", timeout=10.0)
        assert page.status_code == 200 and "v1/realtime" in httpx.get(f"{url}/playground.js", timeout=10.0).text

        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=120.0)

        async def burst() -> list[openai.types.ImagesResponse]:
            calls = [
                client.images.generate(
                    model="sdxl-lightning", prompt="a red fox", size="64x64", extra_body={"steps": 2, "seed": seed}
                )
                for seed in range(8)
            ]
            responses = await asyncio.gather(*calls)
            await client.close()
            return responses

        responses = asyncio.run(burst())
        served_by = {(r.model_extra or {})["served_by"] for r in responses}
        assert len(served_by) == 2, served_by
        assert all(s.startswith("SERVE_REPLICA::") for s in served_by)
        images = [base64.b64decode(r.data[0].b64_json or "") for r in responses if r.data]
        assert images == reference_images(tiny.root, range(8))
        recorded = ledger_records(ledger, 8)  # the ingress's ledger file, on this node
        assert {(a.provider, a.outcome) for a in recorded} == {("local", "succeeded")}  # 64x64: hosted skipped
        assert {a.served_by for a in recorded} == served_by
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _, alive = psutil.wait_procs(cluster, timeout=30)
        for leftover in alive:
            leftover.kill()
    assert process.returncode == 0, log.read_text()[-3000:]
    assert not alive, f"Ray processes left running: {[p.pid for p in alive]}"
