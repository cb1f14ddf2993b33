"""The telemetry overhead benchmark's quick mode runs and reports every setting (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_mode_reports_each_setting() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "otel_overhead.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for setting in ("baseline", "absent", "api, no provider", "sdk on"):
        assert f"{setting}: " in done.stdout
    assert "no provider set: " in done.stdout
