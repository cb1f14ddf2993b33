"""`lightning-client demo`: an offline tour of the sandbox — failover, a comparison, a batch, reports and plots.

A scripted scenario over the two providers the sandbox emulates (and, with --with-local, the
local backend on a tiny random-weight pipeline): it degrades one of them by name, so it is the
one command that names providers; the others find them through the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lightning_client.assembly import open_router
from lightning_client.batching import parse_items, plan_matrix
from lightning_client.batching.manifest import Manifest
from lightning_client.batching.runner import MANIFEST
from lightning_client.cli._common import Debug, UsageError, console, maybe_sandbox, run
from lightning_client.cli.batch import run_batch_with_progress
from lightning_client.cli.compare import print_report_paths, run_comparison, stats_table, write_report_async

HOSTED = ("replicate", "fal")
COMPARE_PROMPTS = ("a lighthouse on a cliff at sunset", "a red fox in fresh snow")
BATCH_PROMPTS = (
    "a bowl of ramen, studio photo",
    "a watercolor map of an island",
    "a robot reading a newspaper",
    "a cabin in a pine forest, morning fog",
    "a macro photo of a dew drop on a leaf",
    "an astronaut riding a bicycle",
)
#: Replicate is degraded so retries and failover show: 30% of its HTTP requests answer 503.
ERROR_RATE = 0.35
DEGRADED = {"replicate": {"error_rate": ERROR_RATE, "inference_s": 0.15}, "fal": {"inference_s": 0.1}}
SIZE = {"width": 512, "height": 512}
#: The tiny random-weight pipeline of --with-local is slow at large sizes on a CPU.
LOCAL_SIZE = {"width": 64, "height": 64}
LEDGER = "ledger.sqlite"


@contextlib.asynccontextmanager
async def tiny_local_model(enabled: bool) -> AsyncIterator[Path | None]:
    """Build a tiny random-weight SDXL-Lightning pipeline in a temporary folder (for --with-local)."""
    if not enabled:
        yield None
        return
    missing = [m for m in ("torch", "diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--with-local needs {', '.join(missing)}: pip install -e '.[local]' in the checkout")
    _quiet_model_libraries()
    from lightning_client.testing.tiny import build_tiny_lightning

    with tempfile.TemporaryDirectory(prefix="lightning-demo-") as folder:
        tiny = await asyncio.to_thread(build_tiny_lightning, Path(folder))
        yield tiny.root


def _quiet_model_libraries() -> None:
    """Keep diffusers' and transformers' progress bars and notices off the demo's output."""
    for name in ("diffusers", "transformers"):
        utils: Any = importlib.import_module(f"{name}.utils")
        utils.logging.set_verbosity_error()
        utils.logging.disable_progress_bar()


def _fresh(out: Path) -> None:
    """Remove the journal and ledger of an earlier demo in `out`, so this run starts from zero."""
    for name in (f"batch/{MANIFEST}", LEDGER, f"{LEDGER}-wal", f"{LEDGER}-shm"):
        (out / name).unlink(missing_ok=True)


def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for everything the demo writes (an earlier demo there is replaced).",
            file_okay=False,
        ),
    ] = Path("lightning-demo"),
    with_local: Annotated[
        bool,
        typer.Option("--with-local", help="Also run the local backend on a tiny random-weight pipeline (needs torch)."),
    ] = False,
    debug: Debug = False,
) -> None:
    """Offline tour: sandboxed providers (Replicate degraded), a comparison, a batch with failover, reports and plots."""

    async def main() -> None:
        started = time.monotonic()
        await asyncio.to_thread(_fresh, out)
        providers = ["replicate", "fal"]
        async with (
            tiny_local_model(with_local) as local_model,
            maybe_sandbox(True, configure=DEGRADED) as sb,
        ):
            if local_model is not None:
                providers.append("local")
            console.print(
                "[bold]lightning-client demo[/] · sandboxed Replicate and fal on loopback "
                f"(Replicate degraded: {ERROR_RATE:.0%} of its requests answer 503)"
            )
            async with open_router(providers, sb, ledger_path=out / LEDGER, folder=local_model) as router:
                cells = plan_matrix(list(COMPARE_PROMPTS), list(HOSTED), [4], 2, seed=42)
                rows = await run_comparison(
                    router, cells, out / "compare", request_fields=dict(SIZE), concurrency=4, description="1/2 compare"
                )
                if local_model is not None:  # random tiny weights on a CPU: small images, one per prompt
                    local_cells = plan_matrix(list(COMPARE_PROMPTS), ["local"], [4], 1, seed=42)
                    rows += await run_comparison(
                        router,
                        local_cells,
                        out / "compare",
                        request_fields=dict(LOCAL_SIZE),
                        concurrency=1,
                        description="   local",
                    )
                items = parse_items([f'"{p}"' for p in BATCH_PROMPTS], source="demo", defaults={**SIZE, "seed": 7})
                summary = await run_batch_with_progress(
                    router, items, out / "batch", concurrency=4, providers=list(HOSTED), description="2/2 batch"
                )
                ledger = router.ledger
                await asyncio.to_thread(ledger.to_csv, out / "ledger.csv")
                notes = [
                    "backend: in-process sandbox (emulated providers: nothing is billed; costs are priced as the live providers would bill)",
                    f"Replicate degraded: {ERROR_RATE:.0%} of its requests answer 503",
                ]
                files = await write_report_async(rows, out / "compare", title="Demo: provider comparison", notes=notes)
                with Manifest(out / "batch" / MANIFEST) as manifest:
                    batch_rows = manifest.rows()
                batch_files = await write_report_async(
                    batch_rows, out / "batch", title="Demo: batch with failover", notes=notes, contact_sheets=False
                )
                console.print(stats_table(rows, "comparison (each job pinned to one provider)"))
        elapsed = time.monotonic() - started
        served = ", ".join(f"{count} by {name}" for name, count in sorted(summary.by_provider.items()))
        console.print(
            f"batch: {summary.done} of {summary.total} items done ({served}), {summary.images} images, "
            f"{summary.failed} failed, {summary.elapsed_s:.1f} s"
        )
        if summary.failovers:
            console.print(
                f"[bold green]failover[/]: {summary.failovers} batch item(s) were served by fal after Replicate "
                "failed; every attempt, failed ones included, is in the ledger."
            )
        else:
            console.print("failover: not needed this time (Replicate's injected errors missed the batch)")
        console.print(f"[bold]written to {escape(str(out))}/[/] in {elapsed:.1f} s")
        print_report_paths(files)
        console.print(f"  batch report    {escape(str(batch_files.markdown))}")
        console.print(
            f"  images          {escape(str(out / 'compare' / 'images'))}/, {escape(str(out / 'batch' / 'images'))}/"
        )
        console.print(
            f"  ledger          {escape(str(out / LEDGER))} (try: lightning-client ledger summary --ledger {escape(str(out / LEDGER))})"
        )

    run(main, debug=debug, command="demo")
