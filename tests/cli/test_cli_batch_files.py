"""`lightning-client batch` input files: validated up front, safe output names, a damaged manifest."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lightning_client.cli import app
from lightning_client.testing.sandbox import Sandbox


def _sent(sandbox: Sandbox) -> int:
    return len(sandbox.replicate.jobs()) + len(sandbox.fal.jobs())


def test_every_bad_line_is_reported_before_anything_is_sent(
    runner: CliRunner, port_sandbox: Sandbox, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = [
        {"prompt": "fine"},
        {"prompt": "too many", "num_images": 20},
        {"prompt": "fine too", "provider": "FAL"},
        {"prompt": "nowhere", "provider": "openai"},
    ]
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(bad), "--out", str(out), "--sandbox-url", port_sandbox.replicate_url])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert f"{bad}:2: num_images=20" in errors[0] and "1 to 8" in errors[0]
    assert f"{bad}:4: provider 'openai' is unknown" in errors[1] and "fal, local, remote, replicate" in errors[1]
    assert "again" not in result.output
    assert _sent(port_sandbox) == 0 and not (out / "manifest.jsonl").exists()


def test_a_line_may_name_its_provider_in_any_case(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat", "provider": "FAL"}\n{"prompt": "a dog", "providers": "Replicate"}\n')
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(out), "--sandbox", "--size", "256x256"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["provider"] for e in entries) == ["fal", "replicate"]


def test_a_plain_text_prompts_file_gets_a_hint(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(10)))
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "out"), "--sandbox"])
    assert result.exit_code == 2
    assert "looks like plain text" in result.output and '{"prompt": "a red fox"}' in result.output
    assert f"{prompts}:1: not valid JSON" in result.output and "7 more line(s)" in result.output


def test_item_ids_cannot_write_outside_the_output_folder(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    ids = ["../../escape", "/abs/olute", "..", "a/b", "a_b"]
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"item {i}"}) + "\n" for i in ids))
    root = tmp_path / "deep" / "er"
    out = root / "out"
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(out), "--sandbox", "--size", "256x256"])
    assert result.exit_code == 0, result.output
    written = {p for p in tmp_path.rglob("*.png") if "plots" not in p.parts}
    inside = {p for p in written if p.resolve().parent == (out / "images").resolve()}
    assert written == inside and len(inside) == len(ids)  # and "a/b" and "a_b" did not collide
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in entries) == sorted(ids)
    for entry in entries:
        (image,) = entry["images"]
        assert (out / image).resolve().parent == (out / "images").resolve()


def test_a_corrupt_manifest_line_is_named_and_the_rest_kept(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"i{n}", "prompt": f"item {n}"}) + "\n" for n in range(4)))
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--out", str(out), "--sandbox", "--size", "256x256"]
    assert runner.invoke(app, args).exit_code == 0
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # damaged in the middle of the file
    manifest.write_text("\n".join(lines) + "\n")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert f"{manifest}:2: corrupt entry skipped" in again.output
    assert "resuming: 3 of 4 items already done" in again.output  # only the damaged item ran again
