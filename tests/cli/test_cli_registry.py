"""The command line finds providers through the registry: any case, plugins included, options from the class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from PIL import Image
from typer.testing import CliRunner

from lightning_client.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_generate_takes_a_provider_name_in_any_case(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "a cat", "--provider", "FAL", "--sandbox", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "✓ fal" in result.output and list(tmp_path.glob("fal-*.png"))


def test_provider_options_come_from_the_provider_class(runner: CliRunner, tmp_path: Path) -> None:
    ok = runner.invoke(
        app,
        [
            "generate",
            "a cat",
            "-p",
            "fal",
            "--sandbox",
            "--option",
            "FAL.mode=run",
            "--size",
            "256x256",
            "-o",
            str(tmp_path),
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["generate", "a cat", "-p", "fal", "--sandbox", "--option", "fal.colour=red"])
    assert bad.exit_code == 2 and "fal has no option 'colour'; allowed: model, base_url, mode" in bad.output
    choice = runner.invoke(app, ["generate", "a cat", "-p", "fal", "--sandbox", "--option", "fal.mode=fast"])
    assert choice.exit_code == 2 and "allowed: queue, run" in choice.output
    unused = runner.invoke(app, ["generate", "a cat", "-p", "fal", "--sandbox", "--option", "replicate.wait_s=5"])
    assert unused.exit_code == 2 and "does not use" in unused.output


def test_a_plugin_provider_works_from_the_command_line(
    script_module: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    plugins = script_module("tests/test_registry.py").write_plugin(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)])}
    command = [sys.executable, "-m", "lightning_client.cli"]
    out = tmp_path / "out"
    done = subprocess.run(
        [*command, "generate", "a cat", "-p", "ACME", "--option", "acme.color=blue", "--size", "64x64", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (saved,) = out.glob("acme-*.png")
    with Image.open(saved) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a dog", "provider": "Acme", "width": 64, "height": 64}) + "\n")
    batch = subprocess.run(
        [*command, "batch", str(prompts), "--out", str(tmp_path / "b"), "--providers", "acme"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    (entry,) = [json.loads(line) for line in (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()]
    assert entry["status"] == "done" and entry["provider"] == "acme"
