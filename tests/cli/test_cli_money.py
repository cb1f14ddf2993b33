"""One money formatter: a sub-cent cost reads the same, never $0, in the ledger summary, report, plots and sheets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lightning_client._money import format_usd
from lightning_client.cli import app
from lightning_client.ledger import Ledger
from lightning_client.report import ResultRow, group_stats, write_report
from lightning_client.report.contact_sheet import caption
from lightning_client.report.plots import cost_note
from lightning_client.result import Attempt, Cost, Timings

TINY = 0.000049


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (TINY, "$0.000049"),
        (0.0000001234, "$0.00000012"),
        (0.0040, "$0.0040"),
        (0.00123, "$0.0012"),
        (1.5, "$1.5000"),
        (0.0, "$0.0000"),
        (None, "unknown"),
    ],
)
def test_no_non_zero_cost_prints_as_zero(usd: float | None, text: str) -> None:
    assert format_usd(usd) == text


def test_unknown_and_estimated_costs_say_so() -> None:
    assert format_usd(None, 0.002) == "unknown (at least $0.0020)"
    assert format_usd(TINY, estimated=True) == "$0.000049 (est.)"


def _tiny_attempt() -> Attempt:
    return Attempt(
        provider="replicate",
        outcome="succeeded",
        timings=Timings(total_s=1.0),
        cost=Cost(usd=TINY, basis="predict_time 0.05 s x $0.000975/s", estimated=False),
        num_images=1,
    )


def test_ledger_summary_prints_a_sub_cent_cost(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.record("end", _tiny_attempt())
    result = runner.invoke(app, ["ledger", "summary", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    assert "0.000049" in result.output and "0.0000 " not in result.output
    header = next(line for line in result.output.splitlines() if "provider" in line)
    assert header.split() == [
        "provider",
        *("sent", "ok", "failed", "cancel", "unknown", "success"),
        *("p50", "p95", "p99", "$/image", "total", "$"),
    ]


def test_report_plot_and_contact_sheet_print_the_same_figure(tmp_path: Path) -> None:
    row = ResultRow(
        job="1", prompt="p", provider="replicate", steps=4, outcome="succeeded", num_images=1, cost_usd=TINY
    )
    row.cost_estimated = False
    files = write_report([row], tmp_path)
    text = files.markdown.read_text()
    assert "total cost: $0.000049" in text and "| $0.000049 |" in text
    (stats,) = group_stats([row])
    assert cost_note(stats) == "$0.000049"
    assert caption(row, "replicate", 1).endswith("\n$0.000049")


def test_ledger_summary_for_machines_is_csv_or_json(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.record("end", _tiny_attempt())
    as_json = runner.invoke(app, ["ledger", "summary", "--ledger", str(path), "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    (row,) = json.loads(as_json.output)
    assert row["provider"] == "replicate" and row["total_cost"] == TINY and row["count"] == 1
    as_csv = runner.invoke(app, ["ledger", "summary", "--ledger", str(path), "--format", "csv"])
    assert as_csv.exit_code == 0 and as_csv.output.startswith("provider,count,succeeded,failed,canceled")
    bad = runner.invoke(app, ["ledger", "summary", "--ledger", str(path), "--format", "xml"])
    assert bad.exit_code == 2 and "--format" in bad.output and "table, csv or json" in bad.output
