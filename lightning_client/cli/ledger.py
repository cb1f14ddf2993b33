"""`lightning-client ledger summary|export|recover`: read (and complete) a ledger written with --ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from lightning_client.cli._commands import Group
from lightning_client.cli._common import Debug, UsageError, console, fail
from lightning_client.errors import ConfigurationError
from lightning_client.ledger import Ledger
from lightning_client.state import is_url

ledger_app = typer.Typer(
    cls=Group, help="Summaries, exports and crash recovery of an attempt ledger.", no_args_is_help=True
)

LedgerFile = Annotated[
    str,
    typer.Option(
        "--ledger",
        help="The ledger: a SQLite file (written by --ledger on generate/compare/batch/demo/serve) or a "
        "postgresql://user@host:port/db URL.",
    ),
]


def _open(where: str, debug: bool) -> Ledger:
    if not is_url(where) and not Path(where).is_file():
        fail(UsageError(f"no ledger file at {where}"), debug=debug, code=2)
    try:
        return Ledger(where)
    except sqlite3.DatabaseError as exc:
        fail(UsageError(f"{where} is not a lightning-client ledger ({exc})"), debug=debug, code=2)
    except (ConfigurationError, RuntimeError) as exc:
        fail(UsageError(str(exc)), debug=debug, code=2)


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_table(ledger: Ledger) -> Table:
    """Per provider: attempts by outcome, success rate, latency percentiles (s) and cost ($)."""
    table = Table(
        title=f"ledger {ledger.where}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="seconds of successful attempts; dollars include failed attempts",
    )
    headers = ("provider", "sent", "ok", "failed", "cancel", "success", "p50", "p95", "$/image", "total $")
    for header in headers:
        table.add_column(header, justify="left" if header == "provider" else "right")
    for s in ledger.summary():
        table.add_row(
            s.provider,
            str(s.count),
            str(s.succeeded),
            str(s.failed),
            str(s.canceled),
            "–" if s.success_rate is None else f"{s.success_rate:.0%}",
            _number(s.p50_s),
            _number(s.p95_s),
            "unknown" if s.unknown_costs else _number(s.cost_per_image, 4),
            f"unknown (>= {s.known_cost:.4f})" if s.unknown_costs else _number(s.total_cost, 4),
        )
    return table


@ledger_app.command()
def summary(ledger: LedgerFile, debug: Debug = False) -> None:
    """Per provider: attempts, success rate, p50/p95/p99 latency and cost per image."""
    book = _open(ledger, debug)
    with book:
        if not len(book):
            console.print(f"{escape(str(ledger))}: no attempts recorded")
            return
        console.print(summary_table(book))
        open_jobs = book.open_jobs()
        if open_jobs:
            ids = ", ".join(a.request_id or "?" for a in open_jobs)
            console.print(f"[yellow]{len(open_jobs)} remote job(s) started but never finished[/]: {escape(ids)}")


@ledger_app.command()
def export(
    ledger: LedgerFile,
    out: Annotated[Path, typer.Option("--out", "-o", help="Target file: .csv or .json.", dir_okay=False)],
    export_format: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: from the --out suffix).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Write every attempt as CSV or JSON."""
    chosen = (export_format or out.suffix.lstrip(".")).lower()
    if chosen not in ("csv", "json"):
        raise typer.BadParameter(f"{chosen!r} is invalid; allowed: csv or json", param_hint="--format")
    book = _open(ledger, debug)
    with book:
        path = book.to_csv(out) if chosen == "csv" else book.to_json(out)
        console.print(f"wrote {len(book)} attempt(s) to {escape(str(path))}")
