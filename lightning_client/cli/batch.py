"""`lightning-client batch`: a JSONL file of prompts, resumable, with per-provider limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lightning_client.assembly import hosted_providers, open_router
from lightning_client.batching import (
    BatchItem,
    BatchSummary,
    LimitedGenerator,
    ManifestEntry,
    load_items,
    parse_rate,
    run_batch,
)
from lightning_client.batching.runner import MANIFEST, Routes
from lightning_client.cli._common import (
    POLICY_HELP,
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
    console,
    maybe_sandbox,
    parse_limits,
    parse_options,
    parse_policy,
    parse_providers,
    progress_bar,
    provider_name,
    rate_text,
    run,
    size_fields,
    usd,
)
from lightning_client.generator import Generator
from lightning_client.report import write_report


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("allowed: an integer >= 1")
    return int(text)


async def run_batch_with_progress(
    router: Routes,
    items: list[BatchItem],
    out: Path,
    *,
    concurrency: int,
    providers: list[str] | None = None,
    description: str = "batch",
) -> BatchSummary:
    """`run_batch` with a progress bar showing rate, ETA and failures so far."""
    from lightning_client.batching.manifest import Manifest

    with Manifest(out / MANIFEST) as manifest:
        already = sum(manifest.is_done(item.id) for item in items)
        for skipped in manifest.skipped:
            console.print(f"[yellow]warning[/]: {escape(skipped)}; that item runs again")
    if already == len(items):
        console.print(f"all {already} items are already done in {escape(str(out / MANIFEST))}; nothing to generate")
        return await run_batch(router, items, out, concurrency=concurrency, providers=providers)
    if already:
        console.print(f"resuming: {already} of {len(items)} items already done")
    failed = 0
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(items) - already, rate="– /s", status="")

        def advance(item: BatchItem, entry: ManifestEntry) -> None:
            nonlocal failed
            failed += entry.status == "failed"
            advance_progress(bar, task, failed)

        return await run_batch(router, items, out, concurrency=concurrency, providers=providers, on_item=advance)


def summary_table(summary: BatchSummary) -> Table:
    table = Table(title="batch", title_justify="left", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows: list[tuple[str, str]] = [
        ("items", str(summary.total)),
        ("done this run", str(summary.done)),
        ("already done (skipped)", str(summary.skipped)),
        ("failed", str(summary.failed)),
        ("images", str(summary.images)),
        ("served after failover", str(summary.failovers)),
        (
            "cost",
            usd(summary.cost_usd)
            if not summary.unknown_costs
            else f"{usd(None)} (at least {usd(summary.cost_usd)}, {summary.unknown_costs} unknown)",
        ),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
        ("rate", rate_text(summary.done, summary.elapsed_s)),
    ]
    rows += [(f"by {provider}", str(count)) for provider, count in sorted(summary.by_provider.items())]
    for name, value in rows:
        table.add_row(name, value)
    return table


def batch(
    prompts: Annotated[
        Path, typer.Argument(help='JSONL file: one {"prompt": ..., ...} object per line.', dir_okay=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for images, the manifest and the report.", file_okay=False)
    ],
    providers: Annotated[
        str | None,
        typer.Option(
            "--providers", help="Comma-separated providers, in failover order (default: every one with a key)."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Items in flight at once.")] = 4,
    provider_concurrency: Annotated[
        list[str] | None,
        typer.Option("--provider-concurrency", help="PROVIDER=N: at most N requests at once to it (repeatable)."),
    ] = None,
    rate_limit: Annotated[
        list[str] | None,
        typer.Option("--rate-limit", help="PROVIDER=N/s|N/min|N/h: request starts per time (repeatable)."),
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help=POLICY_HELP)] = "priority",
    steps: Annotated[int | None, typer.Option("--steps", help="Default steps for lines that set none.")] = None,
    size: Size = None,
    aspect_ratio: AspectRatio = None,
    output_format: Format = "png",
    timeout: Annotated[float | None, typer.Option("--timeout", help="Deadline in seconds per item.")] = None,
    folder: ModelFolder = None,
    option: ProviderOptions = None,
    sandbox: UseSandbox = False,
    sandbox_url: SandboxUrl = None,
    ledger: LedgerPath = None,
    debug: Debug = False,
) -> None:
    """Generate every prompt of a JSONL file; re-running skips finished items, Ctrl-C leaves it resumable."""
    names = parse_providers(providers) if providers else None
    policy = parse_policy(policy)
    slots = parse_limits(provider_concurrency, "--provider-concurrency", _positive_int)
    rates = parse_limits(rate_limit, "--rate-limit", parse_rate)
    defaults: dict[str, Any] = {"output_format": output_format, "timeout_s": timeout, **size_fields(size, aspect_ratio)}
    if steps is not None:
        defaults["steps"] = steps

    def limit(generator: Generator) -> Generator:
        name = generator.name
        if name not in slots and name not in rates:
            return generator
        return LimitedGenerator(generator, concurrency=slots.get(name), per_second=rates.get(name))

    async def main() -> int:
        items = load_items(
            prompts, defaults={k: v for k, v in defaults.items() if v is not None}, providers=provider_name
        )
        chosen = names or hosted_providers(bool(sandbox or sandbox_url))
        # Providers that only some lines name join the router; the other lines keep to `chosen`.
        named = [p for item in items for p in item.providers or () if p not in chosen]
        every = list(dict.fromkeys([*chosen, *named]))
        settings = parse_options(option, every)
        async with (
            maybe_sandbox(sandbox, sandbox_url) as sb,
            open_router(
                every, sb, ledger_path=ledger, folder=folder, provider_options=settings, wrap=limit, policy=policy
            ) as router,
        ):
            try:
                summary = await run_batch_with_progress(router, items, out, concurrency=concurrency, providers=chosen)
            except asyncio.CancelledError:
                console.print(
                    f"in-flight jobs cancelled; finished items are recorded in "
                    f"{escape(str(out / MANIFEST))}. Run the same command again to resume."
                )
                raise
        console.print(summary_table(summary))
        from lightning_client.batching.manifest import Manifest

        with Manifest(out / MANIFEST) as manifest:
            rows = manifest.rows()
        if rows:
            files = await asyncio.to_thread(
                lambda: write_report(
                    rows, out, title="SDXL-Lightning batch", notes=[f"items: {len(items)}"], contact_sheets=False
                )
            )
            console.print(f"  report   {escape(str(files.markdown))}")
        console.print(f"  images   {escape(str(out / 'images'))}")
        console.print(f"  manifest {escape(str(out / MANIFEST))}")
        if summary.failed:
            console.print(f"[yellow]{summary.failed} item(s) failed[/]; run the same command again to retry them.")
            return 1
        return 0

    code = run(main, debug=debug, command="batch")
    if code:
        raise typer.Exit(code)
