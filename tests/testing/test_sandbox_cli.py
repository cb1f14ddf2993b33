"""`lightning-client sandbox` as a user runs it: a process that serves until interrupted."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer

from lightning_client.cli.sandbox import load_config
from lightning_client.testing import Latency


def _serve(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from lightning_client.cli import main; main()", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    env: dict[str, str] = {}
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "FAL_KEY" not in env:
        line = process.stdout.readline()
        if not line:
            break
        if line.strip().startswith("export "):
            name, _, value = line.strip().removeprefix("export ").partition("=")
            env[name] = value
    return process, env


def test_cli_serves_prints_environment_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(
        json.dumps({"seed": 4, "replicate": {"error_status": 402}, "fal": {"inference_s": {"uniform": [0.01, 0.02]}}})
    )
    process, env = _serve("--config", str(config))
    try:
        assert env["REPLICATE_BASE_URL"].startswith("http://127.0.0.1:") and env["FAL_KEY"]
        response = httpx.get(f"{env['REPLICATE_BASE_URL']}/v1/predictions", headers={"Authorization": "Bearer r8_x"})
        assert response.status_code == 402
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "Sandbox stopped." in err


def test_cli_tls_exports_the_ca_bundle() -> None:
    process, env = _serve("--tls")
    try:
        assert env["REPLICATE_BASE_URL"].startswith("https://127.0.0.1:")
        verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        response = httpx.get(
            f"{env['REPLICATE_BASE_URL']}/v1/models/bytedance/sdxl-lightning-4step",
            headers={"Authorization": "Bearer r8_x"},
            verify=verify,
        )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert not Path(env["SSL_CERT_FILE"]).exists()


def test_cli_rejects_a_bad_setting(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps({"replicate": {"speed": 1}}))
    result = subprocess.run(
        [sys.executable, "-c", "from lightning_client.cli import main; main()", "sandbox", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "speed" in result.stderr


def test_load_config_latencies_and_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    config.write_text("seed = 1\n[fal]\nqueue_s = 0.5\n[replicate.inference_s.stragglers]\nbase = 0.1\nrate = 0.5\n")
    data = load_config(config)
    assert isinstance(data["replicate"]["inference_s"], Latency) and data["fal"]["queue_s"] == 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"replicat": {}}))
    with pytest.raises(typer.BadParameter, match="replicat"):
        load_config(bad)
    bad.write_text(json.dumps({"fal": {"queue_s": {"uniform": [0.5, 0.1]}}}))
    with pytest.raises(typer.BadParameter, match=r"fal\.queue_s"):
        load_config(bad)


def test_after_eval_of_the_printed_exports_generate_goes_to_the_sandbox(tmp_path: Path) -> None:
    """As a new user does it: start the sandbox, paste its export lines into a shell, generate."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_client", "sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    exports: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("FAL_REST_URL" in line for line in exports):
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("export "):
                exports.append(line.strip())
        names = {line.removeprefix("export ").split("=")[0] for line in exports}
        assert {"REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "FAL_KEY", "FAL_QUEUE_URL", "FAL_RUN_URL"} <= names
        # A shell without any provider settings of its own (nothing else could point it at the sandbox).
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FAL_"))}
        script = "\n".join(
            [*exports, f'"{sys.executable}" -m lightning_client generate "a cat" --size 256x256 --out out --seed 5']
        )
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=clean, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "replicate" in done.stdout and list((tmp_path / "out").glob("*.png"))
        env = dict(line.removeprefix("export ").split("=", 1) for line in exports)
        listed = httpx.get(
            f"{env['REPLICATE_BASE_URL']}/v1/predictions",
            headers={"Authorization": f"Bearer {env['REPLICATE_API_TOKEN']}"},
        ).json()["results"]
        assert [p["input"]["seed"] for p in listed] == [5]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
