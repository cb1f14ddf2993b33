"""The examples run as documented, offline, against the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FAL_", "LIGHTNING_"))}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_hosted_or_local_falls_back_to_the_sandbox_without_keys(tmp_path: Path) -> None:
    out = _run([str(EXAMPLES / "hosted_or_local.py"), "a lighthouse"], tmp_path)
    assert out.startswith("sandbox: replicate drew seed 1234")
    assert list((tmp_path / "outputs").glob("replicate-1234-0.png"))


def test_compare_cost_latency_writes_a_report(tmp_path: Path) -> None:
    out = _run([str(EXAMPLES / "compare_cost_latency.py")], tmp_path)
    assert "replicate · 4 steps" in out and "fal · 4 steps" in out
    assert (tmp_path / "comparison" / "report.md").exists()
    assert len(list((tmp_path / "comparison" / "plots").glob("*.png"))) == 3


def test_async_batch_resumes(tmp_path: Path) -> None:
    first = _run([str(EXAMPLES / "async_batch.py")], tmp_path)
    assert "done 8, skipped 0, failed 0" in first
    second = _run([str(EXAMPLES / "async_batch.py")], tmp_path)
    assert "done 0, skipped 8, failed 0" in second


@pytest.mark.timeout(180)
def test_ci_example_passes_with_the_sandbox_fixtures(tmp_path: Path) -> None:
    out = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_ci_with_sandbox.py")], tmp_path)
    assert "3 passed" in out


def test_serve_openai_client_calls_a_server_with_the_openai_sdk(tmp_path: Path) -> None:
    out = _run([str(EXAMPLES / "serve_openai_client.py")], tmp_path)
    assert "drew seed 42" in out
    assert (tmp_path / "lighthouse.png").read_bytes().startswith(b"\x89PNG")


def test_remote_failover_moves_to_hosted_when_the_server_stops(tmp_path: Path) -> None:
    out = _run([str(EXAMPLES / "remote_failover.py")], tmp_path)
    assert "'a fox in the snow': served by remote" in out
    assert "'a red bicycle': served by replicate (attempts: remote:failed, replicate:succeeded)" in out
    assert "('remote', 'ProviderUnavailableError')" in out


def test_realtime_typing_serves_the_whole_prompt_last(tmp_path: Path) -> None:
    out = _run([str(EXAMPLES / "realtime_typing.py"), "a red fox"], tmp_path)
    assert "9 keystrokes:" in out and "superseded" in out
    assert "last frame is 'a red fox': realtime-last.jpg" in out
    assert (tmp_path / "realtime-last.jpg").read_bytes().startswith(b"\xff\xd8")
