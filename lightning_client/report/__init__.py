"""Comparison reports: result rows, CSV/JSON, Markdown summaries, plots and contact sheets.

Plots need matplotlib (the `report` extra); it is imported only when plots are drawn.
"""

from __future__ import annotations

from lightning_client.report.contact_sheet import write_contact_sheets
from lightning_client.report.markdown import failovers, write_markdown
from lightning_client.report.rows import ResultRow, read_rows, rows_for_error, rows_for_result, write_rows
from lightning_client.report.stats import GroupStats, group_stats
from lightning_client.report.writer import ReportFiles, write_report

__all__ = [
    "GroupStats",
    "ReportFiles",
    "ResultRow",
    "failovers",
    "group_stats",
    "read_rows",
    "rows_for_error",
    "rows_for_result",
    "write_contact_sheets",
    "write_markdown",
    "write_report",
    "write_rows",
]
