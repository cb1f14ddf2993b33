"""Compare providers on cost and latency, then write the CSV, Markdown report, plots and contact sheets.

    python examples/compare_cost_latency.py            # emulated providers (no keys, nothing billed)
    python examples/compare_cost_latency.py --live     # real Replicate and fal (REPLICATE_API_TOKEN, FAL_KEY)

The CLI does the same with `lightning-client compare`; this shows the library calls behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import lightning_client as lc
from lightning_client.batching import plan_matrix, run_matrix
from lightning_client.report import group_stats, write_report
from lightning_client.result import format_usd

PROMPTS = ["a bowl of ramen, studio photo", "a red fox in fresh snow"]


@contextlib.asynccontextmanager
async def router(live: bool) -> AsyncIterator[lc.Router]:
    if live:
        async with lc.Router([lc.ReplicateGenerator(), lc.FalGenerator()]) as live_router:
            yield live_router
        return
    from lightning_client.testing import Sandbox

    async with Sandbox() as sb:
        sb.replicate.configure(inference_s=0.3)  # emulate Replicate being a little slower
        generators = [
            lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url),
            lc.FalGenerator(api_key="sandbox:key", base_url=sb.fal_url, rest_url=sb.fal_rest_url),
        ]
        async with lc.Router(generators) as sandbox_router:
            yield sandbox_router


async def main(live: bool, out: Path) -> None:
    cells = plan_matrix(PROMPTS, ["replicate", "fal"], steps=[4], repeats=3, seed=7)
    async with router(live) as r:
        rows = await run_matrix(r, cells, out, request_fields={"width": 512, "height": 512}, concurrency=4)
    files = write_report(rows, out, title="Cost and latency", notes=["live" if live else "sandbox"])
    for s in group_stats(rows):
        cost = "–" if s.cost_per_image is None and not s.unknown_costs else format_usd(s.cost_per_image)
        print(f"{s.label:22} p50 {s.p50_s or 0:.2f} s  p95 {s.p95_s or 0:.2f} s  {cost}/image  {s.success_rate:.0%} ok")
    print(f"report: {files.markdown}  plots: {len(files.plots)}  contact sheets: {len(files.contact_sheets)}")


if __name__ == "__main__":
    asyncio.run(main("--live" in sys.argv, Path("out/comparison")))
