"""Hedging against stragglers: latency percentiles and cost per image, hedging off vs on.

Against the loopback sandbox with the real generators. Both providers take `base`
seconds of inference, except 5% of jobs (independently per provider) that take 10x.
Time is compressed: `base` is 0.2 s where the one recorded Replicate run took 1.63 s
of predict_time, so the Replicate $/s rate is scaled up by the same factor and each
provider's cost per normal image matches the real price table (Replicate ~$0.0016 at
L40S rates, fal $0.002). Replicate bills predict_time, so a straggler left to finish
costs 10x; a cancelled one costs what ran until the cancel. fal is billed per image,
in full when abandoned in progress (the generator's conservative estimate).

"off" runs the router without hedging; the hedged modes ("p90", the default, and
"p75") start from the off run's observations, so the hedge delay (Replicate's observed
percentile of total latency) is known from the start. Targets: p99 cut >= 3x for <= 10%
extra cost per image.

    python benchmarks/hedging.py            # 600 requests per mode
    python benchmarks/hedging.py --quick    # 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import lightning_client as lc
from lightning_client.ledger import percentile
from lightning_client.pricing import DEFAULT_PRICES, Price
from lightning_client.testing import Latency, Sandbox

SIZE: dict[str, Any] = {"width": 256, "height": 256}
BASE_S = 0.2
CONCURRENCY = 4
#: Hedge delays compared with no hedging: the default (p90) and an earlier one.
HEDGED_MODES = ("p90", "p75")


def _compressed_prices() -> Any:
    """Replicate's $/s scaled so a `BASE_S` job costs what a real 1.63 s one does."""
    scale = lc.ReplicateGenerator.PREDICT_PRIOR_S / BASE_S
    hardware = {
        sku: Price(usd=p.usd * scale, unit=p.unit, source=f"{p.source} x{scale:.2f} (time compressed)", as_of=p.as_of)
        for sku, p in DEFAULT_PRICES.replicate_hardware.items()
    }
    return DEFAULT_PRICES.model_copy(update={"replicate_hardware": hardware})


async def _drive(router: lc.Router, n: int, tag: str) -> list[lc.GenerationResult]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> lc.GenerationResult:
        async with gate:
            return await router.agenerate(f"{tag} {i}", **SIZE)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def _numbers(router: lc.Router, results: list[lc.GenerationResult]) -> dict[str, float]:
    """Latency from the results; cost from the router's ledger once every loser has cancelled."""
    await router.drain()
    totals = [r.timings.total_s or 0.0 for r in results]
    images = sum(len(r.images) for r in results)
    return {
        "p50_s": percentile(totals, 50),
        "p95_s": percentile(totals, 95),
        "p99_s": percentile(totals, 99),
        "max_s": max(totals),
        "cost_per_image_usd": router.ledger.cost().known_usd / images,
        "hedged_share": sum(any(a.hedge for a in r.attempts) for r in results) / len(results),
        "served_by_fal_share": sum(r.provider == "fal" for r in results) / len(results),
    }


async def _run(n: int) -> dict[str, Any]:
    prices = _compressed_prices()
    report: dict[str, Any] = {"requests_per_mode": n, "base_s": BASE_S, "concurrency": CONCURRENCY}
    with Sandbox() as sb:
        sb.replicate.configure(inference_s=Latency.stragglers(BASE_S, rate=0.05, factor=10, seed=1))
        sb.fal.configure(inference_s=Latency.stragglers(BASE_S, rate=0.05, factor=10, seed=2))
        rep = lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url, prices=prices)
        fal = lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url, prices=prices)
        await lc.Router([rep, fal], hooks=[]).agenerate("warm up", providers=["fal"], **SIZE)
        off = lc.Router([rep, fal], hooks=[])
        report["off"] = await _numbers(off, await _drive(off, n, "off"))
        history = off.ledger.records()
        for mode in HEDGED_MODES:
            # each hedged mode starts from the off run's observations only
            on = lc.Router([rep, fal], hedge=mode, ledger=lc.Ledger(), hooks=[])
            for attempt in history:
                on.stats.observe(rep if attempt.provider == "replicate" else fal, attempt)
            report[f"delay_{mode}_s"] = on.stats.for_generator(rep).latency_percentile(float(mode[1:]))
            report[mode] = await _numbers(on, await _drive(on, n, mode))
        report["replicate_canceled_jobs"] = sb.replicate.stats()["canceled"]
        report["fal_canceled_jobs"] = sb.fal.stats()["canceled"]
        await asyncio.gather(rep.aclose(), fal.aclose())
    for mode in HEDGED_MODES:
        report[mode]["p99_cut_x"] = report["off"]["p99_s"] / report[mode]["p99_s"]
        report[mode]["extra_cost_pct"] = 100 * (
            report[mode]["cost_per_image_usd"] / report["off"]["cost_per_image_usd"] - 1
        )
    return report


def run(quick: bool = False) -> dict[str, Any]:
    """Hedging off vs on; returns percentiles, cost per image, the p99 cut and the extra cost."""
    return asyncio.run(_run(200 if quick else 600))


def _print(report: dict[str, Any]) -> None:
    print(
        f"hedging, {report['requests_per_mode']} requests per mode, {report['concurrency']} at a time, "
        f"base {report['base_s']} s with 5% 10x stragglers"
    )
    header = (
        f"{'hedge':<12}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'max s':>8}{'$/image':>11}{'hedged':>9}{'by fal':>8}"
        f"{'p99 cut':>9}{'extra $':>9}"
    )
    print(header)
    print("-" * len(header))
    for mode in ("off", *HEDGED_MODES):
        r = report[mode]
        label = mode if mode == "off" else f"{mode} {report[f'delay_{mode}_s']:.3f}s"
        cut = f"{r['p99_cut_x']:.2f}x" if "p99_cut_x" in r else ""
        extra = f"{r['extra_cost_pct']:+.1f}%" if "extra_cost_pct" in r else ""
        print(
            f"{label:<12}{r['p50_s']:>8.3f}{r['p95_s']:>8.3f}{r['p99_s']:>8.3f}{r['max_s']:>8.3f}"
            f"{r['cost_per_image_usd']:>11.6f}{r['hedged_share']:>9.1%}{r['served_by_fal_share']:>8.1%}{cut:>9}{extra:>9}"
        )
    print(
        f"losers cancelled remotely: replicate {report['replicate_canceled_jobs']}, fal {report['fal_canceled_jobs']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    report = run(args.quick)
    _print(report)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
