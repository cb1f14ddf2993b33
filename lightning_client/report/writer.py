"""Write every report artefact of a run into one folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_client.report.contact_sheet import write_contact_sheets
from lightning_client.report.markdown import write_markdown
from lightning_client.report.plots import plots_available, write_plots
from lightning_client.report.rows import ResultRow, write_rows

__all__ = ["ReportFiles", "write_report"]


@dataclass
class ReportFiles:
    """Paths written by `write_report`; `plots` is empty (and `missing` says why) without matplotlib."""

    csv: Path
    json: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    contact_sheets: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def write_report(
    rows: Sequence[ResultRow],
    out: Path,
    *,
    title: str = "SDXL-Lightning comparison",
    notes: Sequence[str] = (),
    contact_sheets: bool = True,
) -> ReportFiles:
    """results.csv, results.json, plots/, contact_sheets/ and report.md under `out`.

    Image paths in `rows` are relative to `out`.
    """
    csv_path, json_path = write_rows(rows, out)
    missing: list[str] = []
    plots: list[Path] = []
    if plots_available():
        plots = write_plots(rows, out / "plots")
    else:
        missing.append("plots: matplotlib is not installed (pip install 'lightning-client[report]')")
    sheets = write_contact_sheets(rows, out, out / "contact_sheets") if contact_sheets else []
    markdown = write_markdown(
        rows, out / "report.md", title=title, notes=[*notes, *missing], plots=plots, sheets=sheets
    )
    return ReportFiles(csv_path, json_path, markdown, plots, sheets, missing)
