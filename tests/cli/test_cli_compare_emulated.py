"""`compare` across step counts marks the ones a provider only emulates, from its capabilities."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

import lightning_client as lc
from lightning_client.batching import plan_matrix, run_matrix
from lightning_client.report import write_report
from lightning_client.testing.sandbox import Sandbox


def test_compare_marks_emulated_steps_in_csv_report_and_output(runner: CliRunner, tmp_path: Path) -> None:
    from lightning_client.cli import app

    out = tmp_path / "cmp"
    args = ["compare", "--sandbox", "--providers", "replicate,fal", "--prompt", "a cat", "--steps", "2,4"]
    result = runner.invoke(app, [*args, "--size", "256x256", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["outcome"] == "succeeded"]
    marked = {(r["provider"], r["steps"]) for r in rows if r["steps_emulated"] == "True"}
    assert marked == {("replicate", "2")}
    for row in rows:
        emulated = (row["provider"], row["steps"]) in marked
        assert ("emulated steps" in row["note"]) == emulated
    report = (out / "report.md").read_text()
    assert "| replicate | 2 (emulated) |" in report and "| fal | 2 |" in report and "| replicate | 4 |" in report
    assert "**Emulated step counts**: replicate · 2 steps (emulated)" in report
    assert "emulated" in result.output and "replicate · 2 steps (emulated)" in result.output


async def test_marks_come_from_capabilities_not_names(lightning_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox = lightning_sandbox
    fal = lc.FalGenerator(api_key="sandbox:key", base_url=sandbox.fal_url, rest_url=sandbox.fal_rest_url)
    rep = lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sandbox.replicate_url, name="hosted-a")
    async with lc.Router([rep, fal]) as router:
        cells = plan_matrix(["a fox"], ["hosted-a", "fal"], [1, 4], 1, seed=3)
        rows = await run_matrix(router, cells, tmp_path, request_fields={"width": 256, "height": 256})
    marked = {(r.provider, r.steps) for r in rows if r.steps_emulated}
    assert marked == {("hosted-a", 1)}
    files = write_report(rows, tmp_path, title="t", notes=[], contact_sheets=False)
    assert "hosted-a · 1 step (emulated)" in files.markdown.read_text()
