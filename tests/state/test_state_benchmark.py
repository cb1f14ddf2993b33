"""The shared-state benchmark's quick mode runs and reports both stores and their ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_mode_reports_both_stores(pg_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "state.py"), "--quick", "--postgres", pg_url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for store in ("sqlite", "postgresql"):
        assert report[store]["ledger_writes_per_s"] > 0 and report[store]["reservation"]["p50_ms"] > 0
        assert report[store]["overrun"]["overrun_beyond_reservations_in_flight_usd"] == 0.0
    assert set(report["ratios_postgresql_to_sqlite"]) == {"ledger_writes_per_s", "reservation_p50"}
