"""Ctrl-C during `lightning-client batch --concurrency 4`: nothing keeps running, and the manifest agrees."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from lightning_client.testing.sandbox import Sandbox
from tests.cli.conftest import batch_command

ITEMS = 8


def _jobs(sandbox: Sandbox) -> list[dict[str, Any]]:
    return sandbox.replicate.jobs() + sandbox.fal.jobs()


def test_ctrl_c_during_a_concurrent_batch_cancels_every_job_and_the_manifest_agrees(
    port_sandbox: Sandbox, tmp_path: Path
) -> None:
    for handle in (port_sandbox.replicate, port_sandbox.fal):
        handle.reset()
        handle.configure(inference_s=30)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"item{i}", "prompt": f"interrupted batch {i}"}) + "\n" for i in range(ITEMS))
    )
    out = tmp_path / "out"
    command, env = batch_command(port_sandbox, prompts, out, 4)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while sum(j["status"] == "running" for j in _jobs(port_sandbox)) < 4:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "four jobs never ran at once"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    output, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 15, output
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "never awaited" not in output, output

    jobs = _jobs(port_sandbox)
    assert not any(j["status"] in ("queued", "running") for j in jobs), jobs  # cancelled remotely
    time.sleep(1.0)
    assert not any(j["status"] in ("queued", "running") for j in _jobs(port_sandbox))  # and no late create
    by_prompt: dict[str, list[str]] = {}
    for job in jobs:
        by_prompt.setdefault(job["input"]["prompt"], []).append(job["status"])
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert entries, output
    for entry in entries:
        statuses = by_prompt.get(f"interrupted batch {entry['id'].removeprefix('item')}", [])
        if entry["status"] == "canceled":
            assert statuses and all(s == "canceled" for s in statuses), (entry, statuses)
        else:
            assert entry["status"] == "done" and "succeeded" in statuses, (entry, statuses)


def test_ctrl_c_while_submits_are_unanswered_still_cancels_the_late_jobs(port_sandbox: Sandbox, tmp_path: Path) -> None:
    # fal cannot list requests: a submit interrupted before its answer is cancelled once the answer comes,
    # and the command waits (bounded) for that before it exits.
    for handle in (port_sandbox.replicate, port_sandbox.fal):
        handle.reset()
    port_sandbox.fal.configure(inference_s=30, create_latency_s=2.0)
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"id": f"late{i}", "prompt": f"late batch {i}", "providers": ["fal"]} for i in range(4)]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    command, env = batch_command(port_sandbox, prompts, out, 4)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(port_sandbox.fal.jobs()) < 4:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the submits never arrived"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # the submits' answers are still on their way
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    jobs = port_sandbox.fal.jobs()
    assert len(jobs) == 4 and all(j["status"] == "canceled" for j in jobs), jobs
