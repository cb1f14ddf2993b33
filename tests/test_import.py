"""Importing the package stays light, and the console script answers."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "diffusers",
    "transformers",
    "matplotlib",
    "uvicorn",
    "starlette",
    "typer",
    "fastapi",
    "prometheus_client",
    "ray",
)


def test_import_does_not_load_heavy_modules() -> None:
    code = (
        "import sys, lightning_client as lc; "
        "lc.GenerationRequest(prompt='x'); lc.ReplicateGenerator; lc.FalGenerator; lc.LocalGenerator; lc.Router; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lightning_client", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage" in out.stdout


def test_import_installs_the_realtime_opener_and_loads_no_session_yet() -> None:
    code = (
        "import sys, lightning_client, lightning_client.generator as g; "
        "print(g._realtime_opener is not None, "
        "[m for m in sys.modules if m.startswith(('lightning_client.realtime', 'lightning_client.routing'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"
