"""`lightning-client sandbox` as a user runs it: a process that serves until interrupted."""

from __future__ import annotations

import json
import os
import signal
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
