"""Usage errors, help texts and messages of every command, as a new user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lightning_client.cli import app

COMMANDS = [
    ["generate"],
    ["compare"],
    ["batch"],
    ["demo"],
    ["sandbox"],
    ["version"],
    ["serve"],
    ["ledger"],
    ["ledger", "summary"],
    ["ledger", "export"],
    [],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_shows_flags_as_flags_and_no_none(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output
    assert "None" not in result.output


def test_generate_help_lists_sandbox_as_a_flag(runner: CliRunner) -> None:
    result = runner.invoke(app, ["generate", "--help"])
    line = next(line for line in result.output.splitlines() if "--sandbox " in line)
    assert line.split("--sandbox", 1)[1].split()[0] == "Start"  # the help text follows the flag directly


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["batch", "{prompts}", "--out", "{out}", "--sandbox", "--policy", "bogus"], "--policy"),
        (["generate", "a cat", "--provider", "openai", "--sandbox"], "--provider"),
        (["generate", "a cat", "--steps", "many"], "--steps"),
        (["generate"], "prompt"),
        (["compare", "--out", "{out}", "--providers", "openai", "--prompt", "a"], "openai"),
        (["ledger", "export", "--ledger", "x.sqlite"], "--out"),
        (["nonsense"], "nonsense"),
    ],
)
def test_usage_errors_exit_2_with_one_line(runner: CliRunner, tmp_path: Path, args: list[str], expected: str) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n')
    filled = [a.format(prompts=prompts, out=tmp_path / "out") for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "ValueError" not in lines[0] and "Traceback" not in result.output


def test_unknown_policy_names_the_allowed_ones(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n')
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path), "--sandbox", "--policy", "cheap"])
    assert result.exit_code == 2
    assert "priority, cheapest, fastest, weighted" in result.output
    assert not (tmp_path / "manifest.jsonl").exists()


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--steps", "3", "1, 2, 4 or 8"),
        ("--num-images", "20", "1 to 8"),
        ("--format", "gif", "'png', 'jpeg' or 'webp'"),
    ],
)
def test_invalid_values_are_explained_once(runner: CliRunner, option: str, value: str, allowed: str) -> None:
    result = runner.invoke(app, ["generate", "a cat", "--sandbox", option, value])
    assert result.exit_code == 2
    assert result.output.count(allowed) == 1, result.output
    assert "Input should be" not in result.output
