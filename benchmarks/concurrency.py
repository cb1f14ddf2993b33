"""Concurrency: 1,000 concurrent requests at 0.5 s compute through the Router.

The sandbox runs in one process and the client in another (a fresh one, so its peak RSS is its
own), so the client's wall time, CPU seconds and memory are measured alone and each side can use
one of the cores. Requests alternate between Replicate-first and fal-first, so both providers
serve half. The generators get a connection pool large enough for every request at once
(`max_connections=1024`; the default of 64 would queue them). Target: wall time <= 1.5 s.

    python benchmarks/concurrency.py [--quick] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from typing import Any

from _common import FAL_KEY, REPLICATE_TOKEN, SIZE, RemoteSandbox, cpu_seconds, peak_rss_mb, write_result

COMPUTE_S = 0.5
#: `--quick` bursts fewer requests (a full burst takes over a minute on a 2-core machine).
QUICK_REQUESTS = 250
CONNECTIONS = 1024
TARGET_WALL_S = 1.5


async def _burst(urls: dict[str, str], requests: int) -> dict[str, Any]:
    import lightning_client as lc

    router = lc.Router(
        [
            lc.ReplicateGenerator(
                api_token=REPLICATE_TOKEN, base_url=urls["replicate_url"], max_connections=CONNECTIONS
            ),
            lc.FalGenerator(
                key=FAL_KEY, queue_url=urls["fal_url"], rest_url=urls["fal_url"], max_connections=CONNECTIONS
            ),
        ],
        hooks=[],
    )
    orders = (["replicate", "fal"], ["fal", "replicate"])
    warm = [router.agenerate(f"warm {i}", providers=orders[i % 2], **SIZE) for i in range(20)]
    await asyncio.gather(*warm)
    rss_before = peak_rss_mb()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    outcomes = await asyncio.gather(
        *(router.agenerate(f"burst {i}", providers=orders[i % 2], seed=i, **SIZE) for i in range(requests)),
        return_exceptions=True,
    )
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    await router.aclose()
    ok = [o for o in outcomes if isinstance(o, lc.GenerationResult)]
    failures: dict[str, int] = {}
    examples: list[str] = []
    for outcome in outcomes:
        if not isinstance(outcome, lc.GenerationResult):
            failures[type(outcome).__name__] = failures.get(type(outcome).__name__, 0) + 1
            examples.append(str(outcome)[:400])
    totals = sorted((r.timings.total_s or 0.0) for r in ok)
    return {
        "requests": requests,
        "succeeded": len(ok),
        "failures": failures,
        "failure_examples": examples[:3],
        "wall_s": round(wall, 3),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_ms_per_request": round(cpu / requests * 1e3, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_burst_mb": round(rss_before, 1),
        "slowest_request_s": round(totals[-1], 3) if totals else None,
    }


def _child(urls: dict[str, str], requests: int, conn: Any) -> None:
    conn.send(asyncio.run(_burst(urls, requests)))


def run(quick: bool = False, requests: int | None = None) -> dict[str, Any]:
    """Wall time, client CPU seconds and peak RSS of `requests` concurrent requests at 0.5 s compute."""
    requests = requests or (QUICK_REQUESTS if quick else 1000)
    context = multiprocessing.get_context("spawn")
    with RemoteSandbox() as sb:
        for provider in ("replicate", "fal"):
            sb.configure(provider, inference_s=COMPUTE_S, queue_s=0.0)
        sandbox_cpu = sb.cpu_seconds()
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(sb.urls, requests, sender))
        child.start()
        if not receiver.poll(300):
            child.terminate()
            raise RuntimeError("the concurrency client did not finish within 300 s")
        report: dict[str, Any] = receiver.recv()
        child.join(timeout=30)
        report["sandbox_cpu_s"] = round(sb.cpu_seconds() - sandbox_cpu, 3)
    report.update(compute_s=COMPUTE_S, max_connections=CONNECTIONS, layout="sandbox and client in separate processes")
    report["quick"] = quick
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REQUESTS} requests instead of 1,000")
    parser.add_argument("--requests", type=int, default=None, help="override the number of requests")
    args = parser.parse_args()
    report = run(args.quick, args.requests)
    for key, value in report.items():
        print(f"{key:<28}{value}")
    print(f"wrote {write_result('concurrency', report)}")


if __name__ == "__main__":
    main()
