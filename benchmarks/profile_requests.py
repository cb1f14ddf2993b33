"""Profile the per-request path of our generators and the router against a sandbox in another process.

Runs `--requests` generations with an instant provider (`inference_s=0`) on one event loop, one
at a time or `--concurrency` at once, under pyinstrument (default; wall-clock samples) or cProfile (CPU time), after a warm-up
that opens connections and loads prices. The sandbox runs in its own process, so the profile
holds the client's work only. What the profiles showed is written up in docs/benchmarks.md.

    python benchmarks/profile_requests.py replicate [--requests 300] [--concurrency 1]
    python benchmarks/profile_requests.py fal --profiler cprofile --sort tottime
    python benchmarks/profile_requests.py router --concurrency 200 --html router.html
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from _common import FAL_KEY, REPLICATE_TOKEN, SIZE, RemoteSandbox, cpu_seconds
from cpu_cost import _raw_fal, _raw_replicate

import lightning_client as lc

TARGETS = ("replicate", "fal", "router", "raw_replicate", "raw_fal")
WARM_REQUESTS = 20


def _router(sb: RemoteSandbox, target: str, connections: int) -> lc.Router:
    generators: list[lc.Generator] = []
    if target in ("replicate", "router", "raw_replicate"):
        generators.append(
            lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=sb.replicate_url, max_connections=connections)
        )
    if target in ("fal", "router", "raw_fal"):
        generators.append(
            lc.FalGenerator(api_key=FAL_KEY, base_url=sb.fal_url, rest_url=sb.fal_url, max_connections=connections)
        )
    return lc.Router(generators, hooks=[])


def _call(
    target: str, router: lc.Router, sb: RemoteSandbox, http: httpx.AsyncClient
) -> Callable[[int], Awaitable[None]]:
    """One request: through the router for `router` (alternating which provider goes first), the raw
    httpx loop of benchmarks/cpu_cost.py for `raw_*`, else the generator's own `agenerate`."""
    if target == "raw_replicate":
        return lambda i: _raw_replicate(http, sb.replicate_url, i)
    if target == "raw_fal":
        return lambda i: _raw_fal(http, sb.fal_url, i)
    if target == "router":
        names = [g.name for g in router.generators]
        orders = (names, names[::-1])

        async def routed(i: int) -> None:
            result = await router.agenerate(f"profile {i}", providers=orders[i % 2], seed=i, **SIZE)
            assert result.images[0].data

        return routed
    generator = router.generators[0]

    async def direct(i: int) -> None:
        result = await generator.agenerate(lc.GenerationRequest(prompt=f"profile {i}", seed=i, **SIZE))
        assert result.images[0].data

    return direct


async def _burst(call: Callable[[int], Awaitable[None]], start: int, n: int, concurrency: int) -> None:
    if concurrency <= 1:
        for i in range(start, start + n):
            await call(i)
        return
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(start, start + n)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--profiler",
        choices=("pyinstrument", "cprofile", "none"),
        default="pyinstrument",
        help="none: no profiler in the process (run it under py-spy)",
    )
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative, tottime, ...)")
    parser.add_argument("--limit", type=int, default=60, help="cProfile rows shown")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML report here")
    parser.add_argument("--pstats", type=Path, help="also write cProfile's statistics here (pstats format)")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    with RemoteSandbox() as sb:
        for provider in ("replicate", "fal"):
            sb.configure(provider, inference_s=0.0, queue_s=0.0)
        router = _router(sb, args.target, max(64, args.concurrency))
        http = httpx.AsyncClient(timeout=30)
        call = _call(args.target, router, sb, http)
        loop.run_until_complete(_burst(call, 1_000_000, WARM_REQUESTS, 1))
        work = _burst(call, 0, args.requests, args.concurrency)
        cpu, wall = cpu_seconds(), time.perf_counter()
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
            loop.run_until_complete(work)
            profiler.stop()
        elif args.profiler == "cprofile":
            profile = cProfile.Profile(time.process_time)  # CPU time: the machine may be loaded
            profile.enable()
            loop.run_until_complete(work)
            profile.disable()
        else:
            loop.run_until_complete(work)
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
        loop.run_until_complete(router.aclose())
        loop.run_until_complete(http.aclose())
    loop.close()
    print(
        f"{args.target}: {args.requests} requests, concurrency {args.concurrency}: "
        f"{cpu / args.requests * 1e3:.2f} ms CPU and {wall / args.requests * 1e3:.2f} ms wall per request "
        "(profiler overhead included)",
        file=sys.stderr,
    )
    if args.profiler == "pyinstrument":
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        if args.html:
            args.html.write_text(profiler.output_html())
    elif args.profiler == "cprofile":
        stats = pstats.Stats(profile)
        if args.pstats:
            stats.dump_stats(args.pstats)
        stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
