"""Output that is not a terminal (a pipe, a CI log) is never cut to 80 columns; help reads at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _environment(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLUMNS", "LINES") and not k.startswith(("REPLICATE_", "FAL_"))
    }
    return env | extra


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightning_client.cli", *args],
        capture_output=True,
        text=True,
        env=_environment(**env),
        timeout=240,
        check=False,
    )


def test_compare_into_a_pipe_cuts_no_cell(tmp_path: Path) -> None:
    result = _cli(
        "compare",
        "--sandbox",
        *("--prompt", "a lighthouse"),
        *("--providers", "replicate,fal"),
        *("--steps", "1,2,4,8"),
        *("--size", "256x256"),
        *("--out", str(tmp_path / "out")),
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout and "..." not in result.stdout
    assert "8 (emulated)" in result.stdout and "$/image" in result.stdout


def test_help_at_80_columns_cuts_no_option_name() -> None:
    for command in ([], ["ledger"], ["serve"], ["batch"], ["compare"], ["ledger", "summary"]):
        result = _cli(*command, "--help", COLUMNS="80")
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, result.stdout
        commands = result.stdout.partition("Commands:")[2]
        assert "..." not in commands, commands  # a group's command summaries are whole
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
    serve = _cli("serve", "--help", COLUMNS="80").stdout
    assert "--allow-unauthenticated" in serve and "--max-concurrency" in serve
