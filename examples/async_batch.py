"""An async batch: many prompts, bounded concurrency, per-provider limits, resumable after Ctrl-C.

    python examples/async_batch.py          # emulated providers (no keys, nothing billed)

Finished items are journaled in `out/batch/manifest.jsonl` (`out/` is ignored by git); run it again and only the
unfinished ones are generated. `lightning-client batch` is the same with a progress bar.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import lightning_client as lc
from lightning_client.batching import LimitedGenerator, parse_items, run_batch
from lightning_client.result import format_usd
from lightning_client.testing import Sandbox

PROMPTS = [
    f"a postage stamp of a {animal}" for animal in ("fox", "heron", "whale", "tiger", "bison", "lynx", "seal", "crane")
]


async def main(out: Path) -> None:
    items = parse_items([f'"{p}"' for p in PROMPTS], defaults={"width": 512, "height": 512})
    async with Sandbox() as sb:
        sb.replicate.configure(error_rate=0.35)  # some 503s: the router fails over to fal
        replicate = lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url)
        fal = lc.FalGenerator(api_key="sandbox:key", base_url=sb.fal_url, rest_url=sb.fal_rest_url)
        # At most 2 Replicate requests at once and 5 per second; fal unrestricted.
        generators: list[lc.Generator] = [LimitedGenerator(replicate, concurrency=2, per_second=5), fal]
        async with lc.Router(generators, ledger=lc.Ledger(out / "ledger.sqlite")) as router:
            summary = await run_batch(
                router,
                items,
                out,
                concurrency=4,
                on_item=lambda item, entry: print(f"{entry.status:8} {entry.provider or '-':9} {item.request.prompt}"),
            )
            router.ledger.close()
    print(f"done {summary.done}, skipped {summary.skipped}, failed {summary.failed}, failovers {summary.failovers}")
    print(f"cost {format_usd(summary.cost_usd)} in {summary.elapsed_s:.1f} s; images in {out / 'images'}")


if __name__ == "__main__":
    asyncio.run(main(Path("out/batch")))
