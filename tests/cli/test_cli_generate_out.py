"""`generate --out`: a second image of the same name never replaces the first unless asked to."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lightning_client.cli import app


def test_generate_keeps_earlier_images_of_the_same_name(runner: CliRunner, tmp_path: Path) -> None:
    args = ["generate", "a cat", "--sandbox", "-p", "fal", "--seed", "5", "--size", "256x256", "--out", str(tmp_path)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    original = (tmp_path / "fal-5-0.png").read_bytes()
    (tmp_path / "fal-5-0.png").write_bytes(original + b"marker")  # tell the files apart
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert (tmp_path / "fal-5-0.png").read_bytes().endswith(b"marker")
    assert f"saved     {tmp_path / 'fal-5_2-0.png'}" in second.output
    replaced = runner.invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert (tmp_path / "fal-5-0.png").read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fal-5-0.png", "fal-5_2-0.png"]
