"""The examples run as documented, offline, against the sandbox, from a copy of the checkout that
they leave clean (`git status --porcelain` empty: what they write is ignored by git)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")


def _git(cwd: Path, *args: str) -> str:
    assert GIT is not None
    identity = ["-c", "user.name=examples", "-c", "user.email=examples@localhost", "-c", "commit.gpgsign=false"]
    done = subprocess.run([GIT, *identity, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A fresh git repository holding the checkout's tracked files (its .gitignore included); clean at the end."""
    if GIT is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    copy = tmp_path / "checkout"
    for name in _git(ROOT, "ls-files", "-z").split("\0"):
        if name and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-q", "-m", "checkout")
    yield copy
    assert _git(copy, "status", "--porcelain") == "", "an example left files git does not ignore"


def _run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FAL_", "LIGHTNING_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_hosted_or_local_falls_back_to_the_sandbox_without_keys(checkout: Path) -> None:
    out = _run(["examples/hosted_or_local.py", "a lighthouse"], checkout)
    assert out.startswith("sandbox: replicate drew seed 1234")
    assert list((checkout / "out").glob("replicate-1234-0.png"))


def test_compare_cost_latency_writes_a_report(checkout: Path) -> None:
    out = _run(["examples/compare_cost_latency.py"], checkout)
    assert "replicate · 4 steps" in out and "fal · 4 steps" in out
    assert (checkout / "out" / "comparison" / "report.md").exists()
    assert len(list((checkout / "out" / "comparison" / "plots").glob("*.png"))) == 3


def test_async_batch_resumes(checkout: Path) -> None:
    first = _run(["examples/async_batch.py"], checkout)
    assert "done 8, skipped 0, failed 0" in first
    assert (checkout / "out" / "batch" / "ledger.sqlite").exists()
    second = _run(["examples/async_batch.py"], checkout)
    assert "done 0, skipped 8, failed 0" in second


@pytest.mark.timeout(180)
def test_ci_example_passes_with_the_sandbox_fixtures(checkout: Path) -> None:
    out = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_ci_with_sandbox.py"], checkout)
    assert "3 passed" in out


def test_serve_openai_client_calls_a_server_with_the_openai_sdk(checkout: Path) -> None:
    out = _run(["examples/serve_openai_client.py"], checkout)
    assert "drew seed 42" in out
    assert (checkout / "out" / "lighthouse.png").read_bytes().startswith(b"\x89PNG")


def test_remote_failover_moves_to_hosted_when_the_server_stops(checkout: Path) -> None:
    out = _run(["examples/remote_failover.py"], checkout)
    assert "'a fox in the snow': served by remote" in out
    assert "'a red bicycle': served by replicate (attempts: remote:failed, replicate:succeeded)" in out
    assert "('remote', 'ProviderUnavailableError')" in out


def test_realtime_typing_serves_the_whole_prompt_last(checkout: Path) -> None:
    out = _run(["examples/realtime_typing.py", "a red fox"], checkout)
    assert "9 keystrokes:" in out and "superseded" in out
    assert "last frame is 'a red fox': out/realtime-last.jpg" in out
    assert (checkout / "out" / "realtime-last.jpg").read_bytes().startswith(b"\xff\xd8")


def test_the_example_config_and_the_cli_defaults_leave_the_checkout_clean(checkout: Path) -> None:
    code = (
        "import os\n"
        "import lightning_client as lc\n"
        "from lightning_client.testing import Sandbox\n"
        "with Sandbox() as sb:\n"
        "    os.environ.update(sb.env())\n"
        "    router = lc.load_config('examples/lightning.toml')\n"
        "    with router:\n"
        "        router.generate('a cat', width=256, height=256)\n"
        "    router.ledger.close()\n"
    )
    _run(["-c", code], checkout)
    assert (checkout / "out" / "lightning-ledger.sqlite").exists()
    _run(["-m", "lightning_client.cli", "generate", "a cat", "--sandbox", "--size", "256x256"], checkout)
    assert list((checkout / "outputs").glob("*.png"))
    _run(["-m", "lightning_client.cli", "demo"], checkout)
    assert (checkout / "lightning-demo" / "ledger.sqlite").exists()
