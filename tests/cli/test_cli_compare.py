from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from lightning_client.cli import app


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_compare_in_the_sandbox_writes_rows_report_plots_and_sheets(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        [
            "compare",
            "--sandbox",
            "--providers",
            "replicate,fal",
            "--prompt",
            "a cat",
            "--repeats",
            "3",
            "--size",
            "256x256",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 6 and {r["provider"] for r in rows} == {"replicate", "fal"}
    ok = [r for r in rows if r["outcome"] == "succeeded"]
    assert len(ok) == 6
    for row in ok:
        assert row["prompt"] == "a cat" and row["steps"] == "4" and float(row["total_s"]) > 0
        assert float(row["cost_usd"]) > 0 and row["images"]
        _png(out / row["images"])
    # Every provider got the same seed for the same repeat.
    seeds = {(r["provider"], r["repeat"]): r["seed"] for r in ok}
    assert all(seeds[("replicate", str(n))] == seeds[("fal", str(n))] for n in range(3))
    assert len(json.loads((out / "results.json").read_text())) == len(rows)
    report = (out / "report.md").read_text()
    assert "| replicate | 4 |" in report and "| fal | 4 |" in report and "p95" in report
    for name in ("latency_cdf", "cost_per_image", "latency_breakdown"):
        _png(out / "plots" / f"{name}.png")
    (sheet,) = (out / "contact_sheets").glob("*.png")
    _png(sheet)
    assert "comparing" in result.output and "report" in result.output


def test_compare_steps_matrix_from_a_prompts_file_with_a_ledger(runner: CliRunner, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('# two prompts\na red fox\n{"prompt": "a blue bird"}\n')
    out, ledger = tmp_path / "cmp", tmp_path / "ledger.sqlite"
    result = runner.invoke(
        app,
        [
            "compare",
            "--sandbox",
            "--providers",
            "fal",
            "--prompts",
            str(prompts),
            "--steps",
            "1,8",
            "--size",
            "256x256",
            "--seed",
            "11",
            "--out",
            str(out),
            "--ledger",
            str(ledger),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert {(r["prompt"], r["steps"]) for r in rows} == {(p, s) for p in ("a red fox", "a blue bird") for s in (1, 8)}
    assert {r["seed"] for r in rows} == {11}
    assert len(list((out / "contact_sheets").glob("*.png"))) == 2
    summary = runner.invoke(app, ["ledger", "summary", "--ledger", str(ledger)])
    assert summary.exit_code == 0 and "fal" in summary.output


def test_compare_needs_prompts_and_valid_options(runner: CliRunner, tmp_path: Path) -> None:
    none = runner.invoke(app, ["compare", "--sandbox", "--out", str(tmp_path)])
    assert none.exit_code == 2 and "--prompt" in none.output
    steps = runner.invoke(app, ["compare", "--sandbox", "--prompt", "x", "--steps", "3", "--out", str(tmp_path)])
    assert steps.exit_code == 2 and "1, 2, 4 or 8" in steps.output
    keys = runner.invoke(app, ["compare", "--prompt", "x", "--out", str(tmp_path)])
    assert keys.exit_code == 2 and "lightning-client compare --sandbox" in keys.output
