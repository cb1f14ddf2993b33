"""Ctrl-C, interpreter exit and fork with the sync API, in child processes against the shared sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.testing.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
#: Ctrl-C waits this long at most for remote cancels, plus start-up and the slack of a loaded machine.
EXIT_WITHIN_S = 10.0


@pytest.fixture
def sb(lightning_sandbox: Sandbox) -> Sandbox:
    lightning_sandbox.replicate.reset()
    lightning_sandbox.fal.reset()
    return lightning_sandbox


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_running(sb: Sandbox, proc: subprocess.Popen[str], count: int = 1, timeout: float = 60.0) -> None:
    """Until `count` jobs have been running for at least a second."""
    deadline = time.monotonic() + timeout
    while sum(j["status"] == "running" and time.time() - j["started_at"] >= 1.0 for j in sb.replicate.jobs()) < count:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the child's jobs never ran"
        time.sleep(0.05)


def _exit_code(proc: subprocess.Popen[str], within: float) -> tuple[int, str]:
    started = time.monotonic()
    try:
        output, _ = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"the child did not exit within {within} s:\n{output}")
    assert time.monotonic() - started < within
    return proc.returncode, output


GENERATE = """
    import sys
    import lightning_client as lc

    gen = lc.ReplicateGenerator(api_key="r8_interrupt", base_url=sys.argv[1])
    with lc.Ledger(sys.argv[2]) as ledger, ledger.observe():
        try:
            gen.generate("a lighthouse in a storm", width=256, height=256)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(130)
"""


def test_ctrl_c_in_sync_generate_cancels_the_prediction_and_records_it(sb: Sandbox, tmp_path: Path) -> None:
    sb.replicate.configure(inference_s=30)
    ledger_path = tmp_path / "ledger.db"
    proc = _child(GENERATE, sb.replicate_url, str(ledger_path))
    _wait_running(sb, proc)
    proc.send_signal(signal.SIGINT)
    code, output = _exit_code(proc, EXIT_WITHIN_S)
    assert code == 130 and "interrupted" in output, output
    (job,) = sb.replicate.jobs()
    assert job["status"] == "canceled"
    assert sb.replicate.stats()["running"] == 0
    (record,) = lc.Ledger(ledger_path).records()
    assert record.outcome == "canceled" and record.remote_ids == [job["id"]]


EXIT_WITH_A_CALL_RUNNING = """
    import sys, threading, time
    import lightning_client as lc

    gen = lc.ReplicateGenerator(api_key="r8_interrupt", base_url=sys.argv[1], wait_s=0)
    threading.Thread(target=gen.generate, args=("a lighthouse",), kwargs={"width": 256, "height": 256},
                     daemon=True).start()
    while not open(sys.argv[2]).read():
        time.sleep(0.05)
    print("exiting", flush=True)
"""


def test_interpreter_exit_cancels_a_sync_call_in_flight(sb: Sandbox, tmp_path: Path) -> None:
    sb.replicate.configure(inference_s=30)
    go = tmp_path / "go"
    go.write_text("")
    proc = _child(EXIT_WITH_A_CALL_RUNNING, sb.replicate_url, str(go))
    _wait_running(sb, proc)
    go.write_text("exit now")
    code, output = _exit_code(proc, EXIT_WITHIN_S)
    assert code == 0 and "exiting" in output, output
    (job,) = sb.replicate.jobs()
    assert job["status"] == "canceled" and sb.replicate.stats()["running"] == 0


AFTER_SHUTDOWN = """
    import atexit, sys

    def late() -> None:  # registered first, so it runs after the SDK's own exit handler
        try:
            gen.generate("too late", width=256, height=256)
        except RuntimeError as exc:
            print("RuntimeError:", exc, flush=True)

    atexit.register(late)
    import lightning_client as lc

    gen = lc.ReplicateGenerator(api_key="r8_interrupt", base_url=sys.argv[1])
    gen.generate("in time", width=256, height=256)
    print("first call done", flush=True)
"""


def test_a_sync_call_after_interpreter_shutdown_raises_a_clear_error(sb: Sandbox) -> None:
    proc = _child(AFTER_SHUTDOWN, sb.replicate_url)
    code, output = _exit_code(proc, 60)
    assert code == 0 and "first call done" in output, output
    assert "RuntimeError:" in output and "shutdown" in output, output
    assert sb.replicate.stats()["created"] == 1


FORK = """
    import os, signal, sys
    import lightning_client as lc

    gen = lc.ReplicateGenerator(api_key="r8_fork", base_url=sys.argv[1])
    gen.generate("before the fork", width=256, height=256)  # the background loop now runs in this process
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)  # a hang kills the child with SIGALRM
        try:
            result = gen.generate("in the child", width=256, height=256)
            os._exit(0 if len(result.images) == 1 else 2)
        except BaseException as exc:
            print("child failed:", repr(exc), flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    print("child status", status, flush=True)
    gen.generate("parent after the fork", width=256, height=256)
    print("parent ok", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sync_generate_works_in_a_forked_child(sb: Sandbox) -> None:
    proc = _child(FORK, sb.replicate_url)
    code, output = _exit_code(proc, 90)
    assert code == 0 and "child status 0" in output and "parent ok" in output, output
    prompts = sorted(j["input"]["prompt"] for j in sb.replicate.jobs() if j["status"] == "succeeded")
    assert prompts == ["before the fork", "in the child", "parent after the fork"]
