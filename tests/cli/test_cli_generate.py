from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from lightning_client.cli import app
from lightning_client.testing.sandbox import Sandbox


def test_generate_in_the_sandbox_prints_the_breakdown_and_saves_metadata(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "generate",
            "a cat in a hat",
            "--sandbox",
            "--provider",
            "fal",
            "--size",
            "256x256",
            "--seed",
            "5",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fal" in result.output and "seed 5" in result.output
    for phase in ("queue", "inference", "download", "total", "cost"):
        assert phase in result.output
    (saved,) = tmp_path.glob("*.png")
    with Image.open(saved) as image:
        assert image.size == (256, 256)
        assert image.text["prompt"] == "a cat in a hat"  # type: ignore[attr-defined]
        assert image.text["seed"] == "5" and image.text["provider"] == "fal"  # type: ignore[attr-defined]


def test_generate_reports_warnings_and_several_images(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "generate",
            "a dog",
            "--sandbox",
            "-p",
            "replicate",
            "--steps",
            "2",
            "--aspect-ratio",
            "1:1",
            "-n",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "emulated steps" in result.output
    assert len(list(tmp_path.glob("replicate-*.png"))) == 2


def test_generate_without_keys_says_what_to_set(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "a cat", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "REPLICATE_API_TOKEN" in result.output and "FAL_KEY" in result.output
    assert "--sandbox" in result.output and "Traceback" not in result.output
    one = runner.invoke(app, ["generate", "a cat", "-p", "fal", "--out", str(tmp_path)])
    assert one.exit_code == 2 and "FAL_KEY" in one.output and "REPLICATE_API_TOKEN" not in one.output


def test_size_and_aspect_ratio_are_exclusive(runner: CliRunner) -> None:
    result = runner.invoke(app, ["generate", "a cat", "--sandbox", "--size", "256x256", "--aspect-ratio", "16:9"])
    assert result.exit_code == 2
    assert "either --size WxH or --aspect-ratio W:H" in result.output
    bad = runner.invoke(app, ["generate", "a cat", "--sandbox", "--size", "big"])
    assert bad.exit_code == 2 and "WxH" in bad.output


def test_invalid_request_is_one_clean_line_unless_debug(runner: CliRunner) -> None:
    result = runner.invoke(app, ["generate", "a cat", "--sandbox", "--steps", "3"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: InvalidRequestError")
    assert "steps=3" in lines[0] and "1, 2, 4 or 8" in lines[0]
    debug = runner.invoke(app, ["generate", "a cat", "--sandbox", "--steps", "3", "--debug"])
    assert debug.exit_code == 2 and "Traceback" in debug.output


def test_provider_errors_are_one_line_with_class_and_provider(
    runner: CliRunner, port_sandbox: Sandbox, tmp_path: Path
) -> None:
    port_sandbox.fal.configure(valid_tokens=["another-key"])
    result = runner.invoke(
        app, ["generate", "a cat", "-p", "fal", "--sandbox-url", port_sandbox.replicate_url, "--out", str(tmp_path)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ")
    assert "AuthenticationError" in result.output and "fal" in result.output and "401" in result.output
    assert "Traceback" not in result.output
    # Refused creates are sent again in place a few times (about 2 s at most); the deadline must not end first.
    port_sandbox.fal.configure(valid_tokens=None, error_status=503)
    failed = runner.invoke(
        app, ["generate", "a cat", "-p", "fal", "--sandbox-url", port_sandbox.replicate_url, "--timeout", "30"]
    )
    assert failed.exit_code == 1
    assert "AllProvidersFailedError [router]" in failed.output and "503" in failed.output
