"""`lightning-client compare`: the provider x steps x prompt x repeat matrix, and its report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lightning_client.assembly import hosted_providers, open_router
from lightning_client.batching.matrix import Cell, plan_matrix, run_matrix
from lightning_client.batching.runner import Routes
from lightning_client.cli._common import (
    AspectRatio,
    Debug,
    Format,
    LedgerPath,
    ModelFolder,
    ProviderOptions,
    SandboxUrl,
    Size,
    UseSandbox,
    advance_progress,
    check_request_fields,
    console,
    maybe_sandbox,
    parse_options,
    parse_providers,
    parse_steps,
    per_image,
    progress_bar,
    run,
    size_fields,
)
from lightning_client.report import ReportFiles, ResultRow, group_stats, write_report


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: one per line, or JSON lines with a "prompt" field; blank and # lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--prompts") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text[0] in '{"':
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise typer.BadParameter(f"{path}:{number}: not valid JSON", param_hint="--prompts") from None
            text = value.get("prompt", "") if isinstance(value, dict) else value
            if not isinstance(text, str) or not text.strip():
                raise typer.BadParameter(f'{path}:{number}: no "prompt" string', param_hint="--prompts")
        prompts.append(text)
    if not prompts:
        raise typer.BadParameter(f"{path} holds no prompts", param_hint="--prompts")
    return prompts


def stats_table(rows: Sequence[ResultRow], title: str) -> Table:
    """The report's per provider x steps numbers as a rich table (seconds, dollars)."""
    table = Table(title=title, title_justify="left", caption="latency of successful attempts; cost includes failures")
    for header in ("provider", "steps", "attempts", "success", "p50 s", "p95 s", "infer. s", "$/image"):
        table.add_column(header, justify="left" if header == "provider" else "right", no_wrap=True)
    for s in group_stats(rows):
        table.add_row(
            s.provider,
            "–" if s.steps is None else f"{s.steps} (emulated)" if s.steps_emulated else str(s.steps),
            str(s.attempts),
            f"{s.success_rate:.0%}",
            _number(s.p50_s),
            _number(s.p95_s),
            _number(s.inference_p50_s),
            per_image(s.cost_per_image, unknown=bool(s.unknown_costs), estimated=s.cost_estimated),
        )
    return table


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_emulated(rows: Sequence[ResultRow]) -> None:
    """Say which provider x steps ran on a checkpoint made for another step count."""
    emulated = [s.label for s in group_stats(rows) if s.steps_emulated]
    if emulated:
        console.print(
            f"  [yellow]emulated[/]        {escape(', '.join(emulated))}: run on a checkpoint made for another "
            "step count, not a real step comparison (see the note column)"
        )


def print_report_paths(files: ReportFiles) -> None:
    console.print(f"  report          {escape(str(files.markdown))}")
    console.print(f"  results         {escape(str(files.csv))}, {escape(files.json.name)}")
    if files.plots:
        console.print(f"  plots           {escape(', '.join(str(p) for p in files.plots))}")
    if files.contact_sheets:
        console.print(f"  contact sheets  {escape(str(files.contact_sheets[0].parent))}/ ({len(files.contact_sheets)})")
    for note in files.missing:
        console.print(f"  [yellow]note[/]            {escape(note)}")


async def run_comparison(
    router: Routes,
    cells: Sequence[Cell],
    out: Path,
    *,
    request_fields: dict[str, Any],
    concurrency: int,
    description: str = "comparing",
) -> list[ResultRow]:
    """Run the matrix with a progress bar (rate, ETA and failures so far)."""
    failed = 0
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(cells), rate="– /s", status="")

        def advance(cell: Cell, rows: list[ResultRow]) -> None:
            nonlocal failed
            if not any(r.succeeded for r in rows):
                failed += 1
            advance_progress(bar, task, failed)

        return await run_matrix(
            router, cells, out, request_fields=request_fields, concurrency=concurrency, on_cell=advance
        )


async def write_report_async(
    rows: list[ResultRow], out: Path, *, title: str, notes: list[str], contact_sheets: bool = True
) -> ReportFiles:
    """`write_report` off the event loop (plots and contact sheets take a moment)."""
    return await asyncio.to_thread(
        lambda: write_report(rows, out, title=title, notes=notes, contact_sheets=contact_sheets)
    )


def compare(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for results, report, plots and images.", file_okay=False)
    ],
    providers: Annotated[
        str | None,
        typer.Option(
            "--providers",
            help="Comma-separated registered providers (default: every one the sandbox emulates, "
            "or every one with a key).",
        ),
    ] = None,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="A prompt; repeat for several.")] = None,
    prompts_file: Annotated[
        Path | None, typer.Option("--prompts", help="File with one prompt per line (or JSON lines).", dir_okay=False)
    ] = None,
    steps: Annotated[str, typer.Option("--steps", help="Step counts to compare, e.g. 1,2,4,8.")] = "4",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Runs per prompt, provider and step count.")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs in flight at once.")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="Base seed; repeat r uses seed + r.")] = None,
    size: Size = None,
    aspect_ratio: AspectRatio = None,
    output_format: Format = "png",
    timeout: Annotated[float | None, typer.Option("--timeout", help="Deadline in seconds per job.")] = None,
    folder: ModelFolder = None,
    option: ProviderOptions = None,
    sandbox: UseSandbox = False,
    sandbox_url: SandboxUrl = None,
    ledger: LedgerPath = None,
    debug: Debug = False,
) -> None:
    """Compare providers and step counts: results.csv/json, report.md, plots and contact sheets."""
    names = parse_providers(providers) if providers else None
    step_list = parse_steps(steps)
    if bool(prompt) == (prompts_file is not None):
        raise typer.BadParameter("give --prompt TEXT (one or more) or --prompts FILE", param_hint="--prompt")
    prompts = list(prompt) if prompt else read_prompts(prompts_file)  # type: ignore[arg-type]
    fields: dict[str, Any] = {"output_format": output_format, "timeout_s": timeout, **size_fields(size, aspect_ratio)}

    async def main() -> None:
        check_request_fields(fields)
        chosen = names or hosted_providers(bool(sandbox or sandbox_url))
        settings = parse_options(option, chosen)
        cells = plan_matrix(prompts, chosen, step_list, repeats, seed=seed)
        async with (
            maybe_sandbox(sandbox, sandbox_url) as sb,
            open_router(chosen, sb, ledger_path=ledger, folder=folder, provider_options=settings) as router,
        ):
            rows = await run_comparison(router, cells, out, request_fields=fields, concurrency=concurrency)
        notes = [
            f"providers: {', '.join(chosen)}; steps: {', '.join(map(str, step_list))}; "
            f"prompts: {len(prompts)}; repeats: {repeats}",
            "backend: sandbox (emulated providers: nothing is billed; costs are priced as the live providers would bill)"
            if sandbox or sandbox_url
            else "backend: live providers",
        ]
        files = await write_report_async(rows, out, title="SDXL-Lightning provider comparison", notes=notes)
        console.print(stats_table(rows, "comparison"))
        print_emulated(rows)
        print_report_paths(files)

    run(main, debug=debug, command="compare")
