from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image
from typer.testing import CliRunner

from lightning_client.cli import app
from lightning_client.testing.sandbox import Sandbox
from tests.cli.conftest import batch_command


def _prompts(path: Path, count: int) -> Path:
    path.write_text("\n".join(json.dumps({"prompt": f"cli batch prompt {i}"}) for i in range(count)) + "\n")
    return path


def _entries(manifest: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []


def test_batch_runs_then_skips_finished_items(runner: CliRunner, tmp_path: Path) -> None:
    prompts = _prompts(tmp_path / "prompts.jsonl", 4)
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--out", str(out), "--sandbox", "--size", "256x256", "--concurrency", "2"]
    first = runner.invoke(app, [*args, "--provider-concurrency", "fal=1", "--rate-limit", "replicate=50/s"])
    assert first.exit_code == 0, first.output
    assert "done this run" in first.output and "/s" in first.output
    entries = _entries(out / "manifest.jsonl")
    assert [e["status"] for e in entries] == ["done"] * 4
    for entry in entries:
        (image,) = entry["images"]
        with Image.open(out / image) as opened:
            assert opened.size == (256, 256)
    assert (out / "report.md").exists() and (out / "results.csv").exists()

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(_entries(out / "manifest.jsonl")) == 4  # nothing new was generated
    assert "all 4 items are already done" in again.output
    assert re.search(r"done this run\s*│\s*0 │", again.output) and re.search(
        r"already done \(skipped\)\s*│\s*4 │", again.output
    )


def test_batch_rejects_bad_lines_and_limits_before_sending(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"prompt": "bad", "num_images": 20}\n')
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "o"), "--sandbox"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "num_images" in result.output and "1 to 8" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "manifest.jsonl").exists()
    limit = runner.invoke(
        app, ["batch", str(prompts), "--out", str(tmp_path / "o"), "--sandbox", "--rate-limit", "fal=lots"]
    )
    assert limit.exit_code == 2 and "N/min" in limit.output
    prompts.write_text('{"prompt": "ok"}\n')
    keys = runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "o")])
    assert keys.exit_code == 2 and "REPLICATE_API_TOKEN" in keys.output


def _jobs(sandbox: Sandbox) -> list[dict[str, Any]]:
    return sandbox.replicate.jobs() + sandbox.fal.jobs()


def test_batch_interrupted_with_ctrl_c_resumes_without_duplicates(port_sandbox: Sandbox, tmp_path: Path) -> None:
    for handle in (port_sandbox.replicate, port_sandbox.fal):
        handle.configure(inference_s=0.2)
    prompts = _prompts(tmp_path / "prompts.jsonl", 10)
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    command, env = batch_command(port_sandbox, prompts, out, 2)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while sum(e["status"] == "done" for e in _entries(manifest)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    # From now on jobs run long, so Ctrl-C surely lands while one is in flight remotely.
    for handle in (port_sandbox.replicate, port_sandbox.fal):
        handle.configure(inference_s=30)
    while not any(j["status"] == "running" and time.time() - j["started_at"] > 0.3 for j in _jobs(port_sandbox)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "resume" in output
    assert not any(j["status"] in ("queued", "running") for j in _jobs(port_sandbox))  # cancelled remotely
    assert any(j["status"] == "canceled" for j in _jobs(port_sandbox))

    first = _entries(manifest)
    done_first = {e["id"] for e in first if e["status"] == "done"}
    assert 3 <= len(done_first) < 10
    prompt_of = {e["id"]: e["rows"][0]["prompt"] for e in first if e["status"] == "done"}

    for handle in (port_sandbox.replicate, port_sandbox.fal):
        handle.configure(inference_s=0.05)
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = _entries(manifest)
    done = Counter(e["id"] for e in final if e["status"] == "done")
    assert len(done) == 10 and set(done.values()) == {1}
    succeeded = Counter(j["input"]["prompt"] for j in _jobs(port_sandbox) if j["status"] == "succeeded")
    for item_id in done_first:
        assert succeeded[prompt_of[item_id]] == 1  # finished items were never generated again
