"""The GPU batching benchmark's code path, run as a dry run on the tiny CPU pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_reports_both_rates_and_equal_images(tmp_path: Path) -> None:
    out = tmp_path / "batching.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "local_batching.py"),
            "--full-size",
            "--dry-run",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["full_size"] is False and report["concurrent"] == 8 and report["max_batch_size"] == 4
    assert report["unbatched_images_per_s"] > 0 and report["batched_images_per_s"] > 0
    assert report["batched_pipeline_calls_per_round"] <= 3
    assert report["same_bytes"] is True  # fp32 on a CPU: batched bytes equal unbatched ones
