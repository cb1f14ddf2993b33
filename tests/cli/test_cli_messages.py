"""Messages a new user meets: one wording for provider choices, did-you-mean, the option's name, what was written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import lightning_client as lc
from lightning_client.batching import parse_items
from lightning_client.cli import app
from lightning_client.report import ResultRow, write_report
from lightning_client.report.contact_sheet import caption


@pytest.mark.parametrize("value", ["dalle", "replicate,fal"])
def test_generate_offers_auto_or_one_provider_in_one_wording(runner: CliRunner, value: str) -> None:
    result = runner.invoke(app, ["generate", "x", "--sandbox", "--provider", value])
    assert result.exit_code == 2
    assert "--provider" in result.output and "allowed: auto or one of fal, local, remote, replicate" in result.output


def test_a_mistyped_provider_gets_a_suggestion(runner: CliRunner, tmp_path: Path) -> None:
    one = runner.invoke(app, ["generate", "x", "--sandbox", "--provider", "replicte"])
    assert one.exit_code == 2 and "(did you mean 'replicate'?)" in one.output
    many = runner.invoke(
        app, ["compare", "--sandbox", "--prompt", "x", "--providers", "fal,replicte", "-o", str(tmp_path)]
    )
    assert many.exit_code == 2 and "(did you mean 'replicate'?)" in many.output
    assert "allowed: a comma-separated list of fal, local, remote, replicate" in many.output


def test_compare_steps_error_names_the_option(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--sandbox", "--prompt", "x", "--steps", "3,4", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "Invalid value for --steps: '3,4' is invalid" in result.output


def test_a_batch_line_is_reported_as_written_with_every_field() -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        parse_items(['{"promt": "x"}'], defaults={"output_format": "png"})
    message = info.value.message
    assert "unknown field 'promt' (did you mean 'prompt'?)" in message
    assert "output_format': " not in message and "{" not in message
    assert "prompt, provider_options" in message and "id, provider, providers" in message


def test_a_missing_prompt_says_it_is_required() -> None:
    with pytest.raises(lc.InvalidRequestError, match="prompt is required") as info:
        parse_items(['{"steps": 4}'])
    assert "{" not in info.value.message


def test_a_mistyped_request_field_gets_a_suggestion() -> None:
    with pytest.raises(lc.InvalidRequestError, match=r"unknown field 'stpes' \(did you mean 'steps'\?\)"):
        lc.GenerationRequest(prompt="x", stpes=4)  # type: ignore[call-arg]


def test_the_report_does_not_say_no_cost_next_to_a_total(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", "--sandbox", "--prompt", "x", "--size", "256x256", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "total cost: $" in text and "no cost" not in text


def test_a_repeat_a_column_did_not_run_says_why(tmp_path: Path) -> None:
    rows = [
        ResultRow(job=f"h{r}", prompt="p", provider="fal", steps=4, repeat=r, outcome="succeeded") for r in (0, 1)
    ] + [ResultRow(job="l0", prompt="p", provider="local", steps=4, repeat=0, outcome="succeeded")]
    assert caption(None, "local", 1) == "not run: local ran 1 repeat"
    assert write_report(rows, tmp_path).contact_sheets
