"""`lightning-client ledger summary|export|recover`: read (and complete) a ledger written with --ledger."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from lightning_client.assembly import build_generators, open_configured_router
from lightning_client.cli._commands import Group
from lightning_client.cli._common import (
    ConfigFile,
    Debug,
    SandboxUrl,
    UsageError,
    console,
    fail,
    maybe_sandbox,
    per_image,
    run,
    usd,
)
from lightning_client.errors import ConfigurationError
from lightning_client.ledger import Ledger, ProviderSummary
from lightning_client.routing.recovery import Recovered
from lightning_client.state import is_url

ledger_app = typer.Typer(
    cls=Group,
    help="Summaries, exports and crash recovery of an attempt ledger.",
    no_args_is_help=True,
    rich_markup_mode=None,
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
    """Per provider: attempts by outcome (sent = ok + failed + cancel + unknown), success, latency (s), cost ($)."""
    table = Table(
        title=f"ledger {ledger.where}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="unknown: the outcome is not known (the job may have run); success = ok / (ok + failed + unknown); "
        "seconds of successful attempts; dollars include failed attempts",
    )
    headers = (
        "provider",
        *("sent", "ok", "failed", "cancel", "unknown", "success"),
        *("p50", "p95", "p99", "$/image", "total $"),
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "provider" else "right", no_wrap=True)
    for s in ledger.summary():
        # Attempts never finished (no outcome recorded) are unknown too, so the columns add up.
        unknown = s.count - s.succeeded - s.failed - s.canceled
        table.add_row(
            s.provider,
            *(str(n) for n in (s.count, s.succeeded, s.failed, s.canceled, unknown)),
            "–" if s.success_rate is None else f"{s.success_rate:.0%}",
            *(_number(p) for p in (s.p50_s, s.p95_s, s.p99_s)),
            per_image(s.cost_per_image, unknown=bool(s.unknown_costs), estimated=s.cost_estimated),
            usd(s.total_cost, s.known_cost, estimated=s.cost_estimated and not s.unknown_costs),
        )
    return table


def _machine_summary(ledger: Ledger, chosen: str) -> str:
    """The summary rows as JSON (a list of objects) or CSV; unknown numbers are null / empty, never 0."""
    rows = [s.model_dump(mode="json") for s in ledger.summary()]
    if chosen == "json":
        return json.dumps(rows, indent=2)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ProviderSummary.model_fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue().rstrip("\n")


@ledger_app.command()
def summary(
    ledger: LedgerFile,
    summary_format: Annotated[
        str, typer.Option("--format", help="table (for people), csv or json (for machines: every field, unrounded).")
    ] = "table",
    debug: Debug = False,
) -> None:
    """Per provider: attempts, success rate, p50/p95/p99 latency and cost per image."""
    chosen = summary_format.strip().lower()
    if chosen not in ("table", "csv", "json"):
        raise typer.BadParameter(f"{summary_format!r} is invalid; allowed: table, csv or json", param_hint="--format")
    book = _open(ledger, debug)
    with book:
        if chosen != "table":
            typer.echo(_machine_summary(book, chosen))
            return
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


@ledger_app.command()
def recover(
    ledger: LedgerFile,
    config: ConfigFile = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the images of collected jobs.", file_okay=False)
    ] = Path("recovered"),
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for jobs still running instead of cancelling them.")
    ] = False,
    sandbox_url: SandboxUrl = None,
    debug: Debug = False,
) -> None:
    """Collect the jobs that processes which died left running; never creates a job.

    The generators are the --config file's, else one per provider of the open attempts (with
    its API key from the environment, or pointed at --sandbox-url).
    """
    if config is not None and sandbox_url is not None:
        fail(UsageError("--config and --sandbox-url cannot be combined"), debug=debug, code=2)
    book = _open(ledger, debug)

    async def main() -> list[Recovered]:
        from lightning_client.routing.router import Router

        if config is not None:
            async with open_configured_router(config, ledger_path=ledger) as router:
                return await router.arecover(out, wait=wait)
        providers = sorted({row["provider"] for row in book.store.orphans()})
        if not providers:
            return []
        async with (
            maybe_sandbox(False, sandbox_url) as sb,
            Router(build_generators(providers, sb), ledger=book) as router,
        ):
            return await router.arecover(out, wait=wait)

    with book:
        recovered = run(main, debug=debug, command="ledger recover")
    if not recovered:
        console.print("nothing to recover: no open attempt of a process that is gone")
        return
    table = Table(title="recovered", box=box.SIMPLE_HEAD)
    for column in ("attempt", "provider", "job", "action", "cost", "images"):
        table.add_column(column)
    for item in recovered:
        attempt = item.attempt
        table.add_row(
            attempt.attempt_id[:12],
            attempt.provider,
            attempt.request_id or "–",
            item.action,
            str(attempt.cost),
            ", ".join(str(p) for p in item.paths) or "–",
        )
    console.print(table)
