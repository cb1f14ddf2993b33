"""`lightning-client generate --provider local` on the tiny pipeline: per-step progress, load in the latency line, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

from lightning_client.testing.tiny import TinyLightning, build_tiny_lightning

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


def command(tiny: TinyLightning, out: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_client",
        "generate",
        "a red fox",
        "--provider",
        "local",
        "--local-model",
        str(tiny.root),
        "--out",
        str(out),
        *args,
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def test_generate_shows_steps_and_the_load(tiny: TinyLightning, tmp_path: Path) -> None:
    done = subprocess.run(
        command(tiny, tmp_path, "--steps", "2", "--size", "64x64", "--seed", "3"),
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step 1/2" in done.stderr and "step 2/2" in done.stderr
    latency = next(line for line in done.stdout.splitlines() if "latency" in line)
    assert "load " in latency and "inference " in latency
    assert list(tmp_path.glob("local-3*.png"))


def test_ctrl_c_stops_local_generation_within_one_step(tiny: TinyLightning, tmp_path: Path) -> None:
    process = subprocess.Popen(
        command(tiny, tmp_path, "--steps", "8", "--size", "320x320"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.strip() == "step 1/8":
                break
        else:
            pytest.fail("no step reported")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    later = [line.strip() for line in err.splitlines() if line.strip().startswith("step ")]
    assert len(later) <= 1, later  # at most the step running when the signal came
    assert "interrupted" in err
    assert not list(tmp_path.glob("*.png"))
