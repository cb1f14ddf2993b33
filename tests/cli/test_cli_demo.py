from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from lightning_client.cli import app


def test_demo_runs_offline_and_writes_images_reports_and_plots(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    started = time.monotonic()
    result = runner.invoke(app, ["demo", "--out", str(out)])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 90
    images = list(out.glob("**/images/**/*.png"))
    assert len(images) >= 2
    assert (out / "compare" / "report.md").read_text().startswith("# Demo: provider comparison")
    assert (out / "batch" / "report.md").exists()
    for plot in (out / "compare" / "plots").glob("*.png"):
        with Image.open(plot) as image:
            image.verify()
    assert len(list((out / "compare" / "plots").glob("*.png"))) == 3
    assert "failover" in result.output and str(out) in result.output
    # Failover shows: some batch items were served after a failed attempt at Replicate.
    entries = [json.loads(line) for line in (out / "batch" / "manifest.jsonl").read_text().splitlines()]
    assert all(e["status"] == "done" for e in entries) and len(entries) == 6
    with (out / "ledger.csv").open(newline="") as handle:
        ledger_rows = list(csv.DictReader(handle))
    # Replicate's 503s show in its ledger rows: a create refused and sent again in place (nothing was created,
    # so it is retried), or an attempt that failed over.
    assert any(
        r["provider"] == "replicate" and (r["outcome"] in ("failed", "unknown") or "sent again" in (r["note"] or ""))
        for r in ledger_rows
    )
    _summary_adds_up(runner, out / "ledger.sqlite")

    # Running it again replaces the earlier demo instead of skipping everything.
    again = runner.invoke(app, ["demo", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert len((out / "batch" / "manifest.jsonl").read_text().splitlines()) == 6


def _summary_adds_up(runner: CliRunner, ledger: Path) -> None:
    """Every row of `ledger summary`: sent == ok + failed + cancel + unknown."""
    summary = runner.invoke(app, ["ledger", "summary", "--ledger", str(ledger)])
    assert summary.exit_code == 0, summary.output
    lines = summary.output.splitlines()
    header = next(line.split() for line in lines if line.split()[:2] == ["provider", "sent"])
    assert header[1:6] == ["sent", "ok", "failed", "cancel", "unknown"]
    rows = [line.split() for line in lines if line.split()[:1] in (["replicate"], ["fal"])]
    assert len(rows) == 2
    for row in rows:
        sent, ok, failed, cancel, unknown = (int(n) for n in row[1:6])
        assert sent == ok + failed + cancel + unknown, row


def test_ledger_summary_and_export(runner: CliRunner, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    made = runner.invoke(
        app,
        [
            "generate",
            "a cat",
            "--sandbox",
            "-p",
            "fal",
            "--size",
            "256x256",
            "--out",
            str(tmp_path),
            "--ledger",
            str(ledger),
        ],
    )
    assert made.exit_code == 0, made.output
    summary = runner.invoke(app, ["ledger", "summary", "--ledger", str(ledger)])
    assert summary.exit_code == 0 and "fal" in summary.output and "100%" in summary.output
    exported = runner.invoke(app, ["ledger", "export", "--ledger", str(ledger), "--out", str(tmp_path / "a.json")])
    assert exported.exit_code == 0
    (record,) = json.loads((tmp_path / "a.json").read_text())
    assert record["provider"] == "fal" and record["outcome"] == "succeeded"
    as_csv = runner.invoke(
        app, ["ledger", "export", "--ledger", str(ledger), "--out", str(tmp_path / "a.txt"), "--format", "csv"]
    )
    assert as_csv.exit_code == 0 and (tmp_path / "a.txt").read_text().startswith("attempt_id,provider")
    bad = runner.invoke(app, ["ledger", "export", "--ledger", str(ledger), "--out", str(tmp_path / "a.xml")])
    assert bad.exit_code == 2 and "csv or json" in bad.output
    missing = runner.invoke(app, ["ledger", "summary", "--ledger", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "no ledger file" in missing.output
    (tmp_path / "junk.sqlite").write_text("not a database")
    junk = runner.invoke(app, ["ledger", "summary", "--ledger", str(tmp_path / "junk.sqlite")])
    assert junk.exit_code == 2 and "not a lightning-client ledger" in junk.output


def test_demo_with_local_adds_the_local_backend(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--with-local"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "compare" / "results.json").read_text())
    local = [r for r in rows if r["provider"] == "local"]
    assert len(local) == 2 and all(r["outcome"] == "succeeded" for r in local)
    for row in local:
        with Image.open(out / "compare" / row["images"][0]) as image:
            assert image.size == (64, 64)
    assert "| local | 4 |" in (out / "compare" / "report.md").read_text()
